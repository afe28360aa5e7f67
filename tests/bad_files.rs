//! The bad-file catalogue: damaged, truncated or foreign files give their own clear error or a
//! clean fallback to the other meta slot; never a panic, a hang or wrong data.

use pheap::prelude::*;
use std::path::Path;

use common::Model;
use pheap::{Error, Heap};
use rand::Rng;

mod common;

const META: [usize; 3] = [4096, 8192, 12288];
const DATA_START: usize = 16384;

/// Contents by iteration, cross-checked by point lookups; `None` where reads report damage or
/// disagree with each other (damage only the integrity walk can name).
fn contents(heap: &Heap) -> Option<Model> {
    let rx = heap.begin_read().ok()?;
    let m = common::snapshot(&rx).ok()?;
    for (k, v) in &m {
        if rx.get(k).ok()? != Some(&v[..]) {
            return None;
        }
    }
    Some(m)
}

/// A heap with two durable commits; returns its bytes and both commits' contents.
fn sample(dir: &Path) -> (Vec<u8>, Model, Model) {
    let path = dir.join("sample.pheap");
    let heap = Heap::open(&path).unwrap();
    let mut first = Model::new();
    let mut tx = heap.begin_write().unwrap();
    for i in 0..300u32 {
        let (k, v) = (format!("key {i}").into_bytes(), vec![i as u8; 40 + i as usize % 90]);
        tx.insert(&k, &v).unwrap();
        first.insert(k, v);
    }
    tx.insert(b"big", vec![9u8; 100_000]).unwrap();
    first.insert(b"big".to_vec(), vec![9u8; 100_000]);
    tx.commit().unwrap();
    let mut second = first.clone();
    let mut tx = heap.begin_write().unwrap();
    for i in 0..100u32 {
        let k = format!("key {}", i * 3).into_bytes();
        tx.remove(&k).unwrap();
        second.remove(&k);
    }
    tx.commit().unwrap();
    drop(heap);
    (std::fs::read(&path).unwrap(), first, second)
}

fn open_bytes(dir: &Path, name: &str, bytes: &[u8]) -> pheap::Result<Heap> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    Heap::options().create(false).open(&path)
}

#[test]
fn empty_and_foreign_files() {
    let d = tempfile::tempdir().unwrap();
    assert!(matches!(open_bytes(d.path(), "empty", b""), Err(Error::NotAPheap { .. })));
    let text = b"hello, this is a text file and not a heap at all\n".repeat(500);
    assert!(matches!(open_bytes(d.path(), "text", &text), Err(Error::NotAPheap { .. })));
    let err = Heap::open(d.path()).unwrap_err();
    assert!(matches!(err, Error::Io(_) | Error::NotAPheap { .. }), "{err:?}");
    let msg = open_bytes(d.path(), "text2", &text).unwrap_err().to_string();
    assert!(msg.contains("not a pheap heap file"), "{msg}");
}

#[test]
fn versions_and_page_size() {
    let d = tempfile::tempdir().unwrap();
    let (bytes, ..) = sample(d.path());
    for v in [0u32, 3, 77] {
        let mut b = bytes.clone();
        b[8..12].copy_from_slice(&v.to_le_bytes());
        match open_bytes(d.path(), "v", &b) {
            Err(Error::UnsupportedVersion { found, supported: 2 }) => assert_eq!(found, v),
            other => panic!("version {v}: {other:?}"),
        }
    }
    let mut b = bytes.clone();
    b[12..16].copy_from_slice(&8192u32.to_le_bytes());
    assert!(matches!(open_bytes(d.path(), "ps", &b), Err(Error::Corrupt { .. })));
}

#[test]
fn truncation_at_many_points() {
    let d = tempfile::tempdir().unwrap();
    let (bytes, _, second) = sample(d.path());
    let len = bytes.len();
    let end = {
        let h = open_bytes(d.path(), "whole", &bytes).unwrap();
        h.stats().unwrap().used_size as usize
    };
    assert!(end <= len);
    // Past the allocator's end lies only growth slack: cutting it loses nothing.
    if end < len {
        let h = open_bytes(d.path(), "slack", &bytes[..end]).unwrap();
        assert_eq!(contents(&h).unwrap(), second);
        h.check().unwrap();
    }
    for cut in [
        1,
        5,
        8,
        40,
        63,
        64,
        100,
        4096,
        4200,
        8192,
        8300,
        12287,
        12288,
        20000,
        end / 2,
        end - 4096,
        end - 1,
    ] {
        match open_bytes(d.path(), "cut", &bytes[..cut]) {
            Err(Error::Truncated { len: l, .. }) => assert_eq!(l as usize, cut),
            Err(Error::Corrupt { .. }) if (4096..16384).contains(&cut) => {} // a slot cut away
            Ok(_) => panic!("a file cut to {cut} of {end} used bytes opened"),
            Err(e) => panic!("cut {cut}: unexpected {e:?}"),
        }
    }
}

#[test]
fn every_header_bit_flip_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let (bytes, ..) = sample(d.path());
    for bit in 0..64 * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        match open_bytes(d.path(), "hdr", &b) {
            Err(
                Error::NotAPheap { .. } | Error::UnsupportedVersion { .. } | Error::Corrupt { .. },
            ) => {}
            other => panic!("header bit {bit}: {other:?}"),
        }
    }
}

#[test]
fn meta_slot_damage_falls_back_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let (bytes, first, second) = sample(d.path());
    // Three commits (txn 0, 1, 2), one per slot.
    let txn = |s: usize| u64::from_le_bytes(bytes[META[s] + 8..META[s] + 16].try_into().unwrap());
    let newest = (0..3).max_by_key(|&s| txn(s)).unwrap();
    assert_eq!(txn(newest), 2);
    for slot in 0..3 {
        for byte in 0..256 {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[META[slot] + byte] ^= mask;
                let heap = match open_bytes(d.path(), "meta", &b) {
                    Ok(h) => h,
                    Err(e) => panic!("slot {slot} byte {byte}: the other slot should serve: {e:?}"),
                };
                let got = contents(&heap).unwrap();
                let want = if slot == newest { &first } else { &second };
                assert!(got == *want, "slot {slot} byte {byte}: wrong commit after fallback");
            }
        }
    }
    // A damaged newest slot is not silent: stats and check name it and the commit used.
    for byte in [20usize, 100, 200] {
        let mut b = bytes.clone();
        b[META[newest] + byte] ^= 0x10;
        let heap = open_bytes(d.path(), "meta", &b).unwrap();
        let st = heap.stats().unwrap();
        assert_eq!(st.txn_id, 1, "byte {byte}: opened at the previous commit");
        assert_eq!(st.skipped_commits.len(), 1, "byte {byte}: {:?}", st.skipped_commits);
        let sk = &st.skipped_commits[0];
        assert_eq!((sk.slot as usize, sk.txn_id), (newest, Some(2)), "byte {byte}");
        assert!(sk.reason.contains("damaged"), "{}", sk.reason);
        assert_eq!(heap.check().unwrap().skipped_commits, st.skipped_commits);
    }
    let heap = open_bytes(d.path(), "meta", &bytes).unwrap();
    assert!(heap.stats().unwrap().skipped_commits.is_empty());
    assert!(heap.check().unwrap().skipped_commits.is_empty());
    drop(heap);
    // Every slot damaged: a clear error.
    let mut b = bytes.clone();
    for m in META {
        b[m + 20] ^= 1;
    }
    assert!(matches!(open_bytes(d.path(), "all", &b), Err(Error::Corrupt { .. })));
    // Two slots claiming one transaction: refused.
    let mut b = bytes.clone();
    let (a, z) = (META[newest], META[(newest + 1) % 3]);
    let copy = b[a..a + 256].to_vec();
    b[z..z + 256].copy_from_slice(&copy);
    b[z + 16] ^= 1; // differ, and fix nothing else: the checksum now fails, so fall back
    assert!(open_bytes(d.path(), "same", &b).is_ok());
    let mut b = bytes.clone();
    b[z..z + 256].copy_from_slice(&copy);
    assert!(matches!(open_bytes(d.path(), "same2", &b), Err(Error::Corrupt { .. })));
}

/// A flipped byte inside a small record's key or value: reads report `Corrupt` at the record,
/// never the wrong bytes, and never "absent" for a key that is there (reliability issue, item 1).
#[test]
fn damaged_records_are_errors_on_read_not_wrong_bytes() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("needle.pheap");
    let heap = Heap::open(&path).unwrap();
    let mut tx = heap.begin_write().unwrap();
    for i in 0..200u32 {
        tx.insert(format!("key {i}").as_bytes(), [i as u8; 150]).unwrap();
    }
    let value: Vec<u8> = (0..150u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    tx.insert(b"needle-key", &value).unwrap();
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    tx.insert(b"big", &big).unwrap();
    tx.commit().unwrap();
    drop(heap);
    let bytes = std::fs::read(&path).unwrap();
    let find = |pat: &[u8]| bytes.windows(pat.len()).position(|w| w == pat).unwrap();
    let (k_at, v_at) = (find(b"needle-key"), find(&value));
    for at in [k_at, k_at + 9, v_at, v_at + 75, v_at + 149] {
        let mut b = bytes.clone();
        b[at] ^= 0x04;
        let heap = open_bytes(d.path(), "flip", &b).unwrap();
        let rx = heap.begin_read().unwrap();
        match rx.get(b"needle-key") {
            Err(Error::Corrupt { offset, .. }) => {
                assert!(offset < at as u64 && at as u64 - offset < 256)
            }
            other => panic!("byte {at}: {other:?}"),
        }
        assert!(rx.iter().any(|r| r.is_err()), "byte {at}: iteration returned damaged bytes");
        assert!(heap.check().is_err());
        // Other keys still read.
        assert_eq!(rx.get(b"key 7").unwrap(), Some(&[7u8; 150][..]));
    }
    // A large value is not hashed on every get; get_verified and check find its damage.
    let mut b = bytes.clone();
    b[find(&big[1000..1100]) + 50] ^= 0x01;
    let heap = open_bytes(d.path(), "bigflip", &b).unwrap();
    let rx = heap.begin_read().unwrap();
    assert!(rx.get(b"big").unwrap().is_some());
    assert!(matches!(rx.get_verified(b"big"), Err(Error::Corrupt { .. })));
    assert!(heap.check().is_err());
    assert_eq!(rx.get_verified(b"needle-key").unwrap(), Some(&value[..]));
}

#[test]
fn damaged_data_never_panics() {
    let d = tempfile::tempdir().unwrap();
    let (bytes, _, second) = sample(d.path());
    let mut rng = common::rng(0x9e37_79b9_7f4a_7c15);
    let mut errors = 0;
    for round in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..1 + round % 8 {
            let at = rng.random_range(DATA_START..b.len());
            b[at] ^= rng.random::<u8>() | 1;
        }
        let Ok(heap) = open_bytes(d.path(), "data", &b) else {
            errors += 1;
            continue;
        };
        // Reads either give the right answer or an error; the walk finds the damage.
        let read = contents(&heap);
        let checked = heap.check();
        match (&read, &checked) {
            (Some(m), Ok(_)) => assert_eq!(*m, second, "round {round}: undetected damage"),
            _ => errors += 1,
        }
        // Writing on top of damage is refused or stays consistent; never a panic.
        if let Ok(mut tx) = heap.begin_write() {
            let _ = tx.insert(b"new", b"value").and_then(|_| tx.commit());
        }
    }
    assert!(errors > 200, "damage was detected only {errors} times in 300");
}

#[test]
fn directories_fifos_and_devices_are_refused_without_hanging() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for path in [d.path(), fifo.as_path(), Path::new("/dev/null"), Path::new("/dev/zero")] {
        for read_only in [false, true] {
            let (tx, rx) = std::sync::mpsc::channel();
            let p = path.to_owned();
            std::thread::spawn(move || {
                let r = Heap::options().create(false).read_only(read_only).open(&p);
                let _ = tx.send(r.map(|_| ()));
            });
            let r = rx.recv_timeout(std::time::Duration::from_secs(5)).expect("open hung");
            assert!(matches!(r, Err(Error::NotAPheap { .. } | Error::Io(_))), "{path:?}: {r:?}");
        }
    }
}

/// Rewrite a field of the newest meta slot and fix its checksum, as a hostile writer would.
fn forge_newest_meta(bytes: &[u8], field_off: usize, value: u64) -> Vec<u8> {
    let txn = |s: usize| u64::from_le_bytes(bytes[META[s] + 8..META[s] + 16].try_into().unwrap());
    let newest = (0..3).max_by_key(|&s| txn(s)).unwrap();
    let mut b = bytes.to_vec();
    let m = META[newest];
    b[m + field_off..m + field_off + 8].copy_from_slice(&value.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&b[m..m + 248]);
    b[m + 248..m + 256].copy_from_slice(&sum.to_le_bytes());
    b
}

#[test]
fn forged_meta_fields_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let (bytes, ..) = sample(d.path());
    // An entry count no file of this size can hold would make walks unbounded.
    let b = forge_newest_meta(&bytes, 24, u64::MAX);
    assert!(matches!(open_bytes(d.path(), "entries", &b), Err(Error::Corrupt { .. })));
    // A root outside the data, misaligned, or an end past the file.
    for (field, v) in [(16, 8u64), (16, 16384 + 3), (16, 1 << 40), (32, 16384 + 100)] {
        let b = forge_newest_meta(&bytes, field, v);
        match open_bytes(d.path(), "forged", &b) {
            Err(Error::Corrupt { .. } | Error::Truncated { .. }) => {}
            Ok(h) => {
                // Accepted at open only if reads then report the damage.
                let walked: pheap::Result<()> =
                    h.begin_read().and_then(|rx| rx.iter().try_for_each(|r| r.map(|_| ())));
                assert!(walked.is_err(), "field {field} = {v}: damage unreported");
            }
            Err(e) => panic!("field {field} = {v}: {e:?}"),
        }
    }
}
