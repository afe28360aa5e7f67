//! Hostile files, forged with valid checksums where the walk would otherwise stop early:
//! self-referencing and cyclic nodes (over-deep descents), offsets past the end, misaligned or
//! into the header, `offset + len` overflow, two meta slots with one transaction id. Each case
//! must end in an error (or a clean fallback), never a panic, a hang or an unbounded allocation;
//! the time and memory each takes are printed (`--nocapture`) and recorded in
//! docs/reliability.md.

use pheap::prelude::*;
use std::path::Path;
use std::time::{Duration, Instant};

use pheap::{Error, Heap};
use xxhash_rust::xxh3::xxh3_64;

const META: [usize; 3] = [4096, 8192, 12288];

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

/// The newest valid meta slot's offset.
fn newest_meta(b: &[u8]) -> usize {
    *META
        .iter()
        .filter(|&&m| &b[m..m + 8] == b"PHEAPMT1" && u64_at(b, m + 248) == xxh3_64(&b[m..m + 248]))
        .max_by_key(|&&m| u64_at(b, m + 8))
        .unwrap()
}

fn reseal_meta(b: &mut [u8], m: usize) {
    let sum = xxh3_64(&b[m..m + 248]);
    b[m + 248..m + 256].copy_from_slice(&sum.to_le_bytes());
}

/// A node at `off`: (leaf children, node children) offsets.
fn node(b: &[u8], off: usize) -> (Vec<usize>, Vec<usize>) {
    let (datamap, count) = (u32_at(b, off), u16::from_le_bytes([b[off + 14], b[off + 15]]));
    let kids: Vec<usize> =
        (0..count as usize).map(|i| u64_at(b, off + 16 + 8 * i) as usize).collect();
    let leaves = datamap.count_ones() as usize;
    (kids[..leaves].to_vec(), kids[leaves..].to_vec())
}

/// Recompute the checksum of the node at `off` (so the integrity walk goes on past it).
fn reseal_node(b: &mut [u8], off: usize) {
    let count = u16::from_le_bytes([b[off + 14], b[off + 15]]) as usize;
    let len = 16 + 8 * count;
    b[off + 8..off + 12].fill(0);
    let sum = xxh3_64(&b[off..off + len]) as u32;
    b[off + 8..off + 12].copy_from_slice(&sum.to_le_bytes());
}

/// A heap of about 1 MiB: 4,000 entries, so the root has node children.
fn sample(dir: &Path) -> (Vec<u8>, Vec<Vec<u8>>) {
    let path = dir.join("sample.pheap");
    let keys: Vec<Vec<u8>> = (0..4000u32).map(|i| format!("key-{i}").into_bytes()).collect();
    {
        let heap = Heap::open(&path).unwrap();
        let mut tx = heap.begin_write().unwrap();
        for (i, k) in keys.iter().enumerate() {
            tx.insert(k, [i as u8; 150]).unwrap();
        }
        tx.commit().unwrap();
    }
    (std::fs::read(&path).unwrap(), keys)
}

/// Peak resident memory of this process so far, in KiB.
fn peak_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Open `bytes` and do everything a reader and the integrity walk do; returns whether any of it
/// reported damage. Panics (failing the test) only on a panic inside pheap.
fn exercise(dir: &Path, name: &str, bytes: &[u8], keys: &[Vec<u8>]) -> bool {
    let path = dir.join(format!("{name}.pheap"));
    std::fs::write(&path, bytes).unwrap();
    let t = Instant::now();
    let heap = match Heap::options().read_only(true).open(&path) {
        Ok(h) => h,
        Err(e) => {
            println!("{name:<28} open: {e}  ({:.1} ms)", t.elapsed().as_secs_f64() * 1e3);
            return true;
        }
    };
    let mut damage = 0;
    let rx = heap.begin_read().unwrap();
    for k in keys {
        damage += rx.get(k).is_err() as usize;
    }
    damage += rx.iter().any(|r| r.is_err()) as usize;
    drop(rx);
    let check = heap.check();
    damage += check.is_err() as usize;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "{name:<28} {damage} reads failed; check: {:?}  ({ms:.1} ms)",
        check.err().map(|e| e.to_string())
    );
    // A hang detector, not a speed target (those live in docs/reliability.md).
    assert!(t.elapsed() < Duration::from_secs(5), "{name}: took {ms} ms");
    damage > 0
}

#[test]
fn forged_structures_end_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, keys) = sample(dir.path());
    let m = newest_meta(&bytes);
    let root = u64_at(&bytes, m + 16) as usize;
    let (leaves, nodes) = node(&bytes, root);
    assert!(!nodes.is_empty(), "the root has node children");
    let child = nodes[0];
    let (child_leaves, child_nodes) = node(&bytes, child);
    let root_kid_slot = |i_node: usize| root + 16 + 8 * (leaves.len() + i_node);
    let before = peak_kib();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();

    // The root's first node child points at the root: a descent that never ends by itself.
    let mut b = bytes.clone();
    b[root_kid_slot(0)..root_kid_slot(0) + 8].copy_from_slice(&(root as u64).to_le_bytes());
    reseal_node(&mut b, root);
    cases.push(("self-referencing root", b));

    // A cycle of two: child -> root -> child.
    if !child_nodes.is_empty() {
        let mut b = bytes.clone();
        let slot = child + 16 + 8 * child_leaves.len();
        b[slot..slot + 8].copy_from_slice(&(root as u64).to_le_bytes());
        reseal_node(&mut b, child);
        cases.push(("cycle child -> root", b));
    }

    // Child pointers past the end, misaligned, into the header, at the top of the address space.
    for (name, v) in [
        ("child past the end", bytes.len() as u64 + 4096),
        ("child misaligned", child as u64 + 3),
        ("child into the header", 64),
        ("child at u64::MAX - 7", u64::MAX - 7),
    ] {
        let mut b = bytes.clone();
        b[root_kid_slot(0)..root_kid_slot(0) + 8].copy_from_slice(&v.to_le_bytes());
        reseal_node(&mut b, root);
        cases.push((name, b));
    }

    // A leaf whose value length runs far past the end (offset + len near overflow).
    // Some leaf: descend along first node children until a node holds one.
    let leaf = {
        let mut at = root;
        loop {
            let (l, n) = node(&bytes, at);
            if let Some(&x) = l.first() {
                break x;
            }
            at = n[0];
        }
    };
    for (name, vlen) in
        [("leaf length past the end", 1u32 << 30), ("leaf length u32::MAX", u32::MAX)]
    {
        let mut b = bytes.clone();
        b[leaf + 4..leaf + 8].copy_from_slice(&vlen.to_le_bytes());
        cases.push((name, b));
    }
    // A key length beyond the limit.
    let mut b = bytes.clone();
    b[leaf..leaf + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    cases.push(("leaf key length u32::MAX", b));

    // Two meta slots with the same transaction id.
    let mut b = bytes.clone();
    let other = *META.iter().find(|&&o| o != m).unwrap();
    let slot = b[m..m + 256].to_vec();
    b[other..other + 256].copy_from_slice(&slot);
    reseal_meta(&mut b, other);
    cases.push(("two slots, one txn id", b));

    // An entry count larger than the leaves reachable (the walk must notice, not loop).
    let mut b = bytes.clone();
    b[m + 24..m + 32].copy_from_slice(&(keys.len() as u64 + 10).to_le_bytes());
    reseal_meta(&mut b, m);
    cases.push(("entry count too large", b));

    for (name, b) in &cases {
        let damaged = exercise(dir.path(), name, b, &keys);
        assert!(damaged, "{name}: the damage went unreported");
    }
    let after = peak_kib();
    println!(
        "peak RSS grew by {} KiB over {} cases on a {} KiB file",
        after.saturating_sub(before),
        cases.len(),
        bytes.len() / 1024
    );
    assert!(
        after.saturating_sub(before) < 64 * 1024,
        "a hostile file made pheap allocate > 64 MiB"
    );
}

#[test]
fn two_slots_with_one_id_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = sample(dir.path());
    let m = newest_meta(&bytes);
    let other = *META.iter().find(|&&o| o != m).unwrap();
    let mut b = bytes.clone();
    let slot = b[m..m + 256].to_vec();
    b[other..other + 256].copy_from_slice(&slot);
    let path = dir.path().join("twins.pheap");
    std::fs::write(&path, &b).unwrap();
    let err = Heap::open(&path).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("same transaction"), "{err}");
}
