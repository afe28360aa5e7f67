//! The committed heap of format version 1 (`tests/fixtures/v1.pheap`, written by the build of
//! 2026-11-30) opens with every later build, holds exactly the entries it was written with, and
//! passes the integrity walk; a copy of it can be written to. Regenerate only when starting a new
//! format version's fixture: `PHEAP_WRITE_FIXTURE=1 cargo test --test fixture_v1`.

use pheap::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

use pheap::{Durability, Heap};

/// The entries of the fixture: small values, an empty key, a value of 70,000 bytes (a record
/// run), and the state after a removal (two commits, the last durable).
fn expected() -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut m = BTreeMap::new();
    for i in 0..200u32 {
        m.insert(format!("key {i}").into_bytes(), vec![(i % 251) as u8; (i as usize * 7) % 300]);
    }
    m.insert(Vec::new(), b"empty key".to_vec());
    m.insert(b"large".to_vec(), (0..70_000u32).map(|i| (i % 253) as u8).collect());
    for i in (0..200u32).step_by(3) {
        m.remove(format!("key {i}").as_bytes());
    }
    m
}

fn write(path: &Path) {
    let heap = Heap::options().durability(Durability::None).open(path).unwrap();
    let all = expected();
    let mut tx = heap.begin_write().unwrap();
    for (k, v) in &all {
        tx.insert(k, v).unwrap();
    }
    for i in (0..200u32).step_by(3) {
        tx.insert(format!("key {i}").as_bytes(), b"removed next").unwrap();
    }
    tx.commit().unwrap();
    let mut tx = heap.begin_write().unwrap();
    for i in (0..200u32).step_by(3) {
        assert!(tx.remove(format!("key {i}").as_bytes()).unwrap());
    }
    tx.set_durability(Durability::Immediate);
    tx.commit().unwrap();
}

#[test]
fn the_version_1_fixture_opens_reads_and_checks() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1.pheap");
    if std::env::var_os("PHEAP_WRITE_FIXTURE").is_some() {
        let _ = std::fs::remove_file(&fixture);
        write(&fixture);
        let _ = std::fs::remove_file(fixture.with_file_name("v1.pheap-lock"));
    }
    let bytes = std::fs::read(&fixture).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 1, "format version");
    // A copy in a scratch directory: opening writes a lock file, and writes must not touch the
    // committed fixture.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.pheap");
    std::fs::write(&path, &bytes).unwrap();
    let heap = Heap::options().create(false).open(&path).unwrap();
    let report = heap.check().unwrap();
    assert!(report.skipped_commits.is_empty());
    let rx = heap.begin_read().unwrap();
    let got: BTreeMap<Vec<u8>, Vec<u8>> = rx
        .iter()
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.bytes().unwrap().to_vec())))
        .collect::<pheap::Result<_>>()
        .unwrap();
    assert_eq!(got, expected());
    for (k, v) in &got {
        assert_eq!(rx.get_verified(k).unwrap(), Some(&v[..]));
    }
    drop(rx);
    assert_eq!(heap.stats().unwrap().format_version, 1);
    let mut tx = heap.begin_write().unwrap();
    tx.insert(b"written by a later build", b"yes").unwrap();
    // Version-2 records go into the version-1 file as it is (DESIGN.md, version 2).
    let mut sub = tx.map_mut("a version-2 map").unwrap();
    sub.insert_parts("parts", pheap::Kind::Tagged(5), b"inline", &[&[7u8; 5000]]).unwrap();
    tx.commit().unwrap();
    heap.check().unwrap();
    drop(heap);
    let heap = Heap::options().create(false).open(&path).unwrap();
    assert_eq!(heap.stats().unwrap().format_version, 1, "the header is never rewritten");
    let rx = heap.begin_read().unwrap();
    let v = rx.map("a version-2 map").unwrap().unwrap().get_value("parts").unwrap().unwrap();
    assert_eq!(
        (v.kind(), v.inline(), v.part(0).unwrap().unwrap()),
        (pheap::Kind::Tagged(5), &b"inline"[..], &[7u8; 5000][..])
    );
    assert_eq!(rx.get(b"written by a later build").unwrap(), Some(&b"yes"[..]));
    assert_eq!(rx.len().unwrap(), expected().len() + 2);
    heap.check().unwrap();
}
