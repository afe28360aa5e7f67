//! Sealed heaps (DESIGN §2.1a): `seal_to` makes a copy that opens without a lock file or any
//! lock, refuses every write, and is described by a digest that `check` verifies.

use pheap::prelude::*;
use pheap::{Error, Heap};

/// Every top-level entry (a sub-map as its entries, one level down), sorted.
fn entries(heap: &Heap) -> Vec<(Vec<u8>, Vec<u8>)> {
    let rx = heap.begin_read().unwrap();
    let mut out = Vec::new();
    for item in rx.iter() {
        let (k, v) = item.unwrap();
        if v.kind() == pheap::Kind::Map {
            for sub in rx.map(k).unwrap().unwrap().iter() {
                let (sk, sv) = sub.unwrap();
                out.push(([k, b"/", sk].concat(), sv.bytes().unwrap().to_vec()));
            }
        } else {
            out.push((k.to_vec(), v.bytes().unwrap().to_vec()));
        }
    }
    out.sort();
    out
}

fn source(dir: &tempfile::TempDir) -> Heap {
    let heap = Heap::open(dir.path().join("src.pheap")).unwrap();
    let mut tx = heap.begin_write().unwrap();
    for i in 0..2_000u32 {
        tx.insert(i.to_le_bytes(), vec![i as u8; (i % 300) as usize]).unwrap();
    }
    tx.map_mut("users").unwrap().insert("u1", vec![7u8; 100_000]).unwrap();
    tx.commit().unwrap();
    heap
}

#[test]
fn a_sealed_copy_reads_the_same_opens_without_a_lock_file_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(&dir);
    let path = dir.path().join("v1.pheap");
    let stats = src.seal_to(&path).unwrap();
    assert_eq!(stats.entries, 2_001);
    let digest = stats.digest.expect("a sealed copy has a digest");
    assert!(src.digest().is_none() && !src.sealed());

    // Asked for writable, opened read-only for good: no lock file appears beside it.
    let sealed = Heap::open(&path).unwrap();
    assert!(sealed.sealed());
    assert_eq!(sealed.digest(), Some(digest));
    assert!(!dir.path().join("v1.pheap-lock").exists());
    assert_eq!(entries(&sealed), entries(&src));
    assert_eq!(entries(&sealed).len(), 2_001);
    assert_eq!(sealed.begin_read().unwrap().map("users").unwrap().unwrap().len().unwrap(), 1);
    sealed.check().unwrap();
    assert_eq!(sealed.stats().unwrap().entries, 2_001);
    assert!(sealed.readers().unwrap().is_empty());

    // Every write refused, naming the file.
    match sealed.begin_write() {
        Err(Error::Sealed { path: p }) => assert_eq!(p, path),
        other => panic!("expected Error::Sealed, got {other:?}"),
    }
    assert!(matches!(sealed.try_begin_write(), Err(Error::Sealed { .. })));
    assert!(matches!(sealed.compact(), Err(Error::Sealed { .. })));
    let msg = sealed.begin_write().err().unwrap().to_string();
    assert!(msg.contains("is sealed") && msg.contains("copy_to"), "{msg}");

    // Many handles at once, read-only too; a copy of it is an ordinary, writable heap.
    let again = Heap::options().read_only(true).open(&path).unwrap();
    assert_eq!(again.begin_read().unwrap().len().unwrap(), 2_001);
    let copy = dir.path().join("copy.pheap");
    sealed.copy_to(&copy).unwrap();
    let copy = Heap::open(&copy).unwrap();
    assert!(!copy.sealed());
    let mut tx = copy.begin_write().unwrap();
    tx.insert("new", "x").unwrap();
    tx.commit().unwrap();
}

#[test]
fn a_changed_byte_fails_the_digest_and_a_changed_digest_fails_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(&dir);
    let path = dir.path().join("v1.pheap");
    src.seal_to(&path).unwrap();
    let good = std::fs::read(&path).unwrap();

    // A byte of the big value (out of line, not hashed on read): the digest catches it.
    let at = good.windows(64).rposition(|w| w.iter().all(|&b| b == 7)).unwrap() + 10;
    let mut bad = good.clone();
    bad[at] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    let h = Heap::open(&path).unwrap();
    match h.check() {
        Err(Error::Corrupt { what, .. }) => assert!(what.contains("digest"), "{what}"),
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    drop(h);

    // The digest itself changed: the header's checksum no longer holds.
    let mut bad = good.clone();
    bad[45] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    assert!(matches!(Heap::open(&path), Err(Error::Corrupt { .. })));

    // A flag this build does not know (as the sealed flag is to an earlier build), the
    // header's checksum made right: refused.
    let mut bad = good.clone();
    bad[32] |= 2;
    let sum = xxhash_rust::xxh3::xxh3_64(&bad[..56]);
    bad[56..64].copy_from_slice(&sum.to_le_bytes());
    std::fs::write(&path, &bad).unwrap();
    match Heap::open(&path) {
        Err(Error::Corrupt { what, .. }) => {
            assert!(what.contains("unknown header flags"), "{what}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // The flag cleared (the header's checksum made right again), the digest left: refused,
    // not opened as an ordinary, writable heap.
    let mut bad = good;
    bad[32] = 0;
    let sum = xxhash_rust::xxh3::xxh3_64(&bad[..56]);
    bad[56..64].copy_from_slice(&sum.to_le_bytes());
    std::fs::write(&path, &bad).unwrap();
    match Heap::open(&path) {
        Err(Error::Corrupt { what, .. }) => assert!(what.contains("digest"), "{what}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_same_content_seals_to_the_same_file_whatever_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(&dir);
    let a = dir.path().join("a.pheap");
    let da = src.seal_to(&a).unwrap().digest.unwrap();
    // Later commits that leave the content as it was: an entry added and removed, one rewritten
    // with its own value, and a compaction.
    let mut tx = src.begin_write().unwrap();
    tx.insert("extra", vec![1u8; 5000]).unwrap();
    tx.commit().unwrap();
    let mut tx = src.begin_write().unwrap();
    tx.remove("extra").unwrap();
    tx.insert(7u32.to_le_bytes(), vec![7u8; 7]).unwrap();
    tx.commit().unwrap();
    src.compact().unwrap();
    let b = dir.path().join("b.pheap");
    assert_eq!(src.seal_to(&b).unwrap().digest.unwrap(), da);
    // A copy keeps its source's key-hash seed, so a copy seals to the same file too.
    let copy = dir.path().join("copy.pheap");
    src.copy_to(&copy).unwrap();
    let c = dir.path().join("c.pheap");
    assert_eq!(Heap::open(&copy).unwrap().seal_to(&c).unwrap().digest.unwrap(), da);
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(std::fs::read(&b).unwrap(), bytes);
    assert_eq!(std::fs::read(&c).unwrap(), bytes);
    // Nothing of this boot in it: one meta slot holds the commit, with no boot id (bytes 88..104
    // of a slot), the others are zero; so a sealing after a reboot makes the same file.
    let slots: Vec<&[u8]> = (1..4).map(|p| &bytes[p * 4096..p * 4096 + 256]).collect();
    assert_eq!(slots.iter().filter(|s| s.iter().any(|&b| b != 0)).count(), 1);
    assert!(slots.iter().all(|s| s[88..104].iter().all(|&b| b == 0)));
    // Other content, another digest.
    let mut tx = src.begin_write().unwrap();
    tx.insert("extra", b"x").unwrap();
    tx.commit().unwrap();
    let d = dir.path().join("d.pheap");
    assert_ne!(src.seal_to(&d).unwrap().digest.unwrap(), da);
}

#[test]
fn the_digest_is_xxh3_128_of_the_file_with_header_bytes_40_to_64_as_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(&dir);
    let mut tx = src.begin_write().unwrap();
    tx.insert("big", vec![3u8; 6 << 20]).unwrap();
    tx.commit().unwrap();
    let path = dir.path().join("v1.pheap");
    let digest = src.seal_to(&path).unwrap().digest.unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[40..56], &digest); // stored in the header, bytes in file order
    bytes[40..64].fill(0);
    assert_eq!(xxhash_rust::xxh3::xxh3_128(&bytes).to_le_bytes(), digest);
    assert!(bytes.len() > 4 << 20, "more than one chunk of the hashing");
}
