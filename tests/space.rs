//! Space: reuse under churn, and the file's tail given back once nothing can reach it.

use pheap::prelude::*;
use pheap::{Durability, Heap};
use rand::Rng;

mod common;

#[test]
fn the_tail_is_given_back_once_no_snapshot_reaches_it() {
    let dir = tempfile::tempdir().unwrap();
    let heap = Heap::open(dir.path().join("t.pheap")).unwrap();
    let mut tx = heap.begin_write().unwrap();
    tx.insert(b"small", b"stays").unwrap();
    tx.commit().unwrap();
    let mut tx = heap.begin_write().unwrap();
    for i in 0..300u32 {
        tx.insert(i.to_be_bytes(), vec![i as u8; 100_000]).unwrap();
    }
    tx.commit().unwrap();
    let big = heap.stats().unwrap().file_size;
    assert!(big > 25 << 20);
    let rx = heap.begin_read().unwrap();
    let mut tx = heap.begin_write().unwrap();
    for i in 0..300u32 {
        tx.remove(i.to_be_bytes()).unwrap();
    }
    tx.commit().unwrap();
    let bump = |n: u32| {
        for i in 0..n {
            let mut tx = heap.begin_write().unwrap();
            tx.insert(b"small", i.to_le_bytes()).unwrap();
            tx.commit().unwrap();
        }
    };
    bump(5);
    // A pinned snapshot still reaches the tail: nothing is given back, its data is intact.
    let s = heap.stats().unwrap();
    assert_eq!(s.file_size, big, "the file shrank under a pinned snapshot");
    assert!(s.held_by_readers >= 300 * 100_000, "{s:?}");
    assert_eq!(s.oldest_reader, Some(rx.txn_id()));
    for i in (0..300u32).step_by(37) {
        assert_eq!(rx.get(i.to_be_bytes()).unwrap(), Some(&vec![i as u8; 100_000][..]));
    }
    drop(rx);
    // Released: the next commit frees the runs, the ones after give the file back.
    bump(5);
    let s = heap.stats().unwrap();
    assert!(s.file_size < 2 << 20, "file still {} bytes: {s:?}", s.file_size);
    assert_eq!((s.pending_bytes, s.held_by_readers), (s.pending_bytes, 0));
    heap.check().unwrap();
    assert_eq!(heap.begin_read().unwrap().len().unwrap(), 1);
}

#[test]
fn non_durable_commits_keep_the_durable_commits_tail_until_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let heap = Heap::open(dir.path().join("d.pheap")).unwrap();
    let mut tx = heap.begin_write().unwrap();
    for i in 0..100u32 {
        tx.insert(i.to_be_bytes(), vec![1; 100_000]).unwrap();
    }
    tx.commit().unwrap(); // durable
    let big = heap.stats().unwrap().file_size;
    for i in 0..100u32 {
        let mut tx = heap.begin_write().unwrap();
        tx.set_durability(Durability::None);
        tx.remove(i.to_be_bytes()).unwrap();
        tx.commit().unwrap();
    }
    // A power loss would bring back the durable commit: its records must stay.
    let s = heap.stats().unwrap();
    assert_eq!(s.file_size, big);
    assert!(s.pending_bytes >= 100 * 100_000 && s.held_by_readers == 0, "{s:?}");
    heap.checkpoint().unwrap();
    heap.checkpoint().unwrap();
    // The next commit releases the space, the one after merges the tail, and the file is cut
    // once none of the three meta slots holds a commit that reached it.
    for _ in 0..5 {
        let mut tx = heap.begin_write().unwrap();
        tx.insert(b"x", b"y").unwrap();
        tx.commit().unwrap();
    }
    let s = heap.stats().unwrap();
    assert!(s.file_size < 2 << 20, "{s:?}");
    heap.check().unwrap();
}

/// A fixed live set overwritten and removed at random, durable commits, no call from the user:
/// the file stays within 1.5x of the live bytes plus a constant.
#[test]
fn churn_keeps_the_file_within_one_and_a_half_times_the_live_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let heap = Heap::open(dir.path().join("c.pheap")).unwrap();
    let keys = 20_000u64;
    let mut x = common::rng(0x9e37_79b9_7f4a_7c15);
    let value = |r: u64| vec![r as u8; 20 + (r % 400) as usize];
    let mut tx = heap.begin_write().unwrap();
    for k in 0..keys {
        tx.insert(k.to_be_bytes(), value(x.random::<u64>())).unwrap();
    }
    tx.commit().unwrap();
    let mut worst = 0f64;
    for round in 0..150 {
        let mut tx = heap.begin_write().unwrap();
        for _ in 0..keys / 20 {
            let k = x.random::<u64>() % keys;
            if x.random::<u64>().is_multiple_of(4) {
                tx.remove(k.to_be_bytes()).unwrap();
                let k2 = x.random::<u64>() % keys;
                tx.insert(k2.to_be_bytes(), value(x.random::<u64>())).unwrap();
            } else {
                tx.insert(k.to_be_bytes(), value(x.random::<u64>())).unwrap();
            }
        }
        tx.commit().unwrap();
        let s = heap.stats().unwrap();
        assert!(
            s.file_size <= s.live_bytes * 3 / 2 + (4 << 20),
            "round {round}: file {} for {} live bytes",
            s.file_size,
            s.live_bytes
        );
        worst = worst.max(s.file_size as f64 / s.live_bytes as f64);
        if round % 50 == 0 {
            heap.check().unwrap();
        }
    }
    eprintln!("churn: worst file / live = {worst:.3}");
}

#[test]
fn compact_brings_a_fragmented_heap_within_a_tenth_of_its_live_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let heap = Heap::open(dir.path().join("k.pheap")).unwrap();
    let mut x = common::rng(0x1234_5678_9abc_def1);
    let mut model = std::collections::HashMap::new();
    let mut tx = heap.begin_write().unwrap();
    for k in 0..60_000u64 {
        let v = vec![
            k as u8;
            (x.random::<u64>() % 600) as usize + if k % 1000 == 0 { 70_000 } else { 0 }
        ];
        tx.insert(k.to_be_bytes(), &v).unwrap();
        model.insert(k, v);
    }
    tx.commit().unwrap();
    // Remove two keys in three, in batches: holes everywhere, most of the tail included.
    for chunk in (0..60_000u64).filter(|k| k % 3 != 0).collect::<Vec<_>>().chunks(5000) {
        let mut tx = heap.begin_write().unwrap();
        for k in chunk {
            assert!(tx.remove(k.to_be_bytes()).unwrap());
            model.remove(k);
        }
        tx.commit().unwrap();
    }
    let before = heap.stats().unwrap();
    let c = heap.compact().unwrap();
    let s = heap.stats().unwrap();
    eprintln!(
        "compact: file {} -> {} bytes for {} live ({:.2}x), {:?}",
        before.file_size,
        s.file_size,
        s.live_bytes,
        s.file_size as f64 / s.live_bytes as f64,
        c
    );
    // Two thirds removed at random: every span keeps some live records, so the tail empties
    // only by moving them.
    assert!(
        s.file_size <= s.live_bytes * 11 / 10 + (2 << 20),
        "after compact: file {} for {} live bytes (was {})",
        s.file_size,
        s.live_bytes,
        before.file_size
    );
    assert_eq!(c.file_size_after, s.file_size);
    heap.check().unwrap();
    let rx = heap.begin_read().unwrap();
    assert_eq!(rx.len().unwrap(), model.len());
    for (k, v) in &model {
        assert_eq!(rx.get(k.to_be_bytes()).unwrap(), Some(&v[..]));
    }
}

/// Two handles of one file in one process: each must learn the length the other left, grown or
/// shortened, before writing (a writer that kept a length longer than the file would write
/// through the mapping past its end and die of SIGBUS).
#[test]
fn a_writer_learns_the_length_another_handle_left() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pheap");
    let (a, b) = (Heap::open(&path).unwrap(), Heap::open(&path).unwrap());
    let fill = |heap: &Heap, tag: u8| {
        let mut tx = heap.begin_write().unwrap();
        for i in 0..300u32 {
            tx.insert(i.to_be_bytes(), vec![tag; 100_000]).unwrap();
        }
        tx.commit().unwrap();
    };
    let small = |heap: &Heap, i: u32| {
        let mut tx = heap.begin_write().unwrap();
        tx.insert(b"small", i.to_le_bytes()).unwrap();
        tx.commit().unwrap();
    };
    let file_len = || std::fs::metadata(&path).unwrap().len();
    fill(&a, 1);
    small(&b, 0); // b now knows the grown length
    let grown = file_len();
    assert!(grown > 25 << 20);
    let mut tx = a.begin_write().unwrap();
    for i in 0..300u32 {
        assert!(tx.remove(i.to_be_bytes()).unwrap());
    }
    tx.commit().unwrap();
    for i in 1..10 {
        small(&a, i);
    }
    assert!(file_len() < 4 << 20, "a gave nothing back: {} bytes", file_len());
    // b writes last-known-length-deep: only a fresh length keeps these writes inside the file.
    fill(&b, 2);
    small(&a, 10);
    for heap in [&a, &b] {
        heap.check().unwrap();
        let rx = heap.begin_read().unwrap();
        assert_eq!(rx.get(299u32.to_be_bytes()).unwrap(), Some(&[2u8; 100_000][..]));
        assert_eq!(rx.get(b"small").unwrap(), Some(&10u32.to_le_bytes()[..]));
    }
}

/// A transaction that grows the file and ends without committing (aborted, dropped, or failed
/// half-way) gives the growth back: the file keeps the length it had, also after close, and
/// compaction's "before" is not inflated by it.
#[test]
fn a_transaction_that_commits_nothing_leaves_the_file_as_long_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("abort.pheap");
    let len = || std::fs::metadata(&path).unwrap().len();
    {
        let heap = Heap::open(&path).unwrap();
        let mut tx = heap.begin_write().unwrap();
        for i in 0..2000u32 {
            tx.insert(i.to_le_bytes(), [i as u8; 150]).unwrap();
        }
        tx.commit().unwrap();
    }
    let closed = len();
    let heap = Heap::open(&path).unwrap();
    for how in ["abort", "drop"] {
        let before = len();
        let mut tx = heap.begin_write().unwrap();
        // More than the file's slack: the transaction grows the file.
        tx.insert(b"big", vec![7u8; 3 << 20]).unwrap();
        assert!(len() > before, "{how}: the transaction grew the file");
        match how {
            "abort" => tx.abort(),
            _ => drop(tx),
        }
        assert_eq!(len(), before, "{how}: the growth was given back");
    }
    // A single small key, as the user wrote it.
    let mut tx = heap.begin_write().unwrap();
    tx.insert(b"one", b"key").unwrap();
    tx.abort();
    drop(heap);
    assert_eq!(len(), closed, "closing after aborts leaves the length the file had");
    let heap = Heap::open(&path).unwrap();
    assert_eq!(heap.begin_read().unwrap().len().unwrap(), 2000);
    heap.check().unwrap();
    let report = heap.compact().unwrap();
    assert_eq!(report.file_size_before, closed);
}
