//! The public API against a `HashMap` model on real files: inserts, removes, commits of both
//! durabilities, aborts, checkpoints, held snapshots and reopens (closing trims the file; the
//! reopened heap must equal the last commit, non-durable ones included, as the machine did not
//! restart).

use std::collections::HashMap;

use pheap::{Durability, Heap, ReadTxn, WriteTxn};
use proptest::prelude::*;

type Model = HashMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Clone)]
enum Op {
    Insert(u16, u32),
    Remove(u16),
    Commit(bool),
    Abort,
    Checkpoint,
    Reopen,
    Pin,
    Unpin,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (0u16..300, prop_oneof![20 => 0u32..400, 1 => 66_000u32..90_000]).prop_map(|(k, l)| Op::Insert(k, l)),
        10 => (0u16..300).prop_map(Op::Remove),
        6 => any::<bool>().prop_map(Op::Commit),
        1 => Just(Op::Abort),
        1 => Just(Op::Checkpoint),
        2 => Just(Op::Reopen),
        2 => Just(Op::Pin),
        2 => Just(Op::Unpin),
    ]
}

fn key(k: u16) -> Vec<u8> {
    format!("key/{k}/{}", "x".repeat(k as usize % 40)).into_bytes()
}

fn value(k: u16, len: u32, step: u32) -> Vec<u8> {
    (0..len).map(|i| (i ^ step ^ k as u32) as u8).collect()
}

fn contents_rx(rx: &ReadTxn) -> Model {
    rx.iter()
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<pheap::Result<_>>()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PHEAP_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(128)
    ))]

    #[test]
    fn file_heap_matches_model(ops in prop::collection::vec(op(), 1..150)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.pheap");
        let mut heap = Heap::open(&path).unwrap();
        let mut committed = Model::new();
        let mut tx: Option<(WriteTxn, Model)> = None;
        let mut pinned: Vec<(ReadTxn, Model)> = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Insert(k, len) => {
                    let (t, m) = tx.get_or_insert_with(|| (heap.begin_write().unwrap(), committed.clone()));
                    let v = value(k, len, step as u32);
                    t.insert(&key(k), &v).unwrap();
                    m.insert(key(k), v);
                }
                Op::Remove(k) => {
                    let (t, m) = tx.get_or_insert_with(|| (heap.begin_write().unwrap(), committed.clone()));
                    prop_assert_eq!(t.remove(&key(k)).unwrap(), m.remove(&key(k)).is_some());
                }
                Op::Commit(durable) => {
                    if let Some((mut t, m)) = tx.take() {
                        prop_assert_eq!(t.len(), m.len() as u64);
                        t.set_durability(if durable { Durability::Immediate } else { Durability::None });
                        t.commit().unwrap();
                        committed = m;
                        for (rx, m) in &pinned {
                            prop_assert_eq!(&contents_rx(rx), m, "a pinned snapshot changed");
                        }
                    }
                }
                Op::Abort => drop(tx.take()),
                Op::Checkpoint => {
                    if tx.is_none() {
                        heap.checkpoint().unwrap();
                    }
                }
                Op::Reopen => {
                    tx = None;
                    pinned.clear();
                    drop(heap);
                    heap = Heap::open(&path).unwrap();
                    let rx = heap.begin_read().unwrap();
                    prop_assert_eq!(&contents_rx(&rx), &committed);
                }
                Op::Pin => {
                    let rx = heap.begin_read().unwrap();
                    pinned.push((rx, committed.clone()));
                }
                Op::Unpin => {
                    pinned.pop();
                }
            }
        }
        drop(tx);
        let rx = heap.begin_read().unwrap();
        prop_assert_eq!(&contents_rx(&rx), &committed);
        for (k, v) in &committed {
            prop_assert_eq!(rx.get(k).unwrap(), Some(&v[..]));
        }
        drop(rx);
        heap.check().unwrap();
    }
}
