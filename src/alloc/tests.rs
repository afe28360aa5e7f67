//! The allocator against a model of the space it hands out: a set of byte ranges in use, and the
//! ranges freed but not yet reusable (I3-I5).

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::{Allocator, Pager};
use crate::format::*;
use crate::storage::Storage;
use crate::storage::mem::MemStorage;

#[derive(Debug, Clone)]
enum Op {
    /// Allocate a record of this many bytes.
    Alloc(u64),
    /// Free the i-th live record (modulo their number).
    Free(usize),
    /// Commit; durable or not.
    Commit(bool),
    /// Drop the transaction: the next one reloads the allocator from the last commit.
    Abort,
}

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![20 => 1u64..600, 3 => 600u64..70_000, 1 => 70_000u64..300_000];
    prop_oneof![
        10 => size.prop_map(Op::Alloc),
        6 => any::<usize>().prop_map(Op::Free),
        2 => any::<bool>().prop_map(Op::Commit),
        1 => Just(Op::Abort),
    ]
}

/// The bytes a record of `size` bytes at `off` occupies: its slot, or its run of pages.
fn extent(off: u64, size: u64) -> (u64, u64) {
    if size > MAX_SLAB_SIZE {
        let start = off - RUN_HEADER_SIZE;
        (start, start + record_run_pages(size) * PAGE_SIZE)
    } else {
        (off, off + CLASS_SIZES[class_of(size)] as u64)
    }
}

/// A set of disjoint ranges (start -> end).
#[derive(Debug, Clone, Default)]
struct Ranges(BTreeMap<u64, u64>);

impl Ranges {
    fn overlapping(&self, (start, end): (u64, u64)) -> Option<(u64, u64)> {
        let before = self.0.range(..end).next_back().map(|(&s, &e)| (s, e));
        before.filter(|&(_, e)| e > start)
    }
    fn insert(&mut self, r: (u64, u64)) {
        assert!(self.overlapping(r).is_none(), "{r:?} overlaps {:?}", self.overlapping(r));
        self.0.insert(r.0, r.1);
    }
}

/// A record the model holds: where, how large, and the transaction that allocated it.
#[derive(Debug, Clone, Copy)]
struct Record {
    off: u64,
    size: u64,
    born: u64,
}

/// A freed record's space, with the transaction that freed it and whether it waits for a
/// durable commit (it was allocated before the last one) or only for readers.
#[derive(Debug, Clone, Copy)]
struct Held {
    extent: (u64, u64),
    freed: u64,
    durability_bound: bool,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PHEAP_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64)
    ))]

    /// No two live records overlap, and none lies in space freed by a transaction that is not
    /// yet reusable: a record freed by commit T is reused only after T when it was allocated
    /// after the last durable commit (reader-only: no reader is pinned here), else only once a
    /// commit at or after T is durable; a record allocated and freed in one transaction is
    /// reusable at once. After every commit the persisted state, loaded anew, lists no live
    /// record as free, pending or metadata.
    #[test]
    fn space_is_never_handed_out_twice(ops in prop::collection::vec(op(), 1..300)) {
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new(256 << 20));
        storage.grow(DATA_START).unwrap();
        let mut a = Allocator::empty(Pager::new(storage.clone()));
        let (mut txn, mut durable) = (0u64, 0u64);
        a.begin_txn(TxnId(txn), TxnId(durable)).unwrap();
        let mut summary = a.summary();
        let (mut live, mut committed): (Vec<Record>, Vec<Record>) = (Vec::new(), Vec::new());
        let (mut held, mut held_committed): (Vec<Held>, Vec<Held>) = (Vec::new(), Vec::new());
        for op in ops {
            let current = txn + 1;
            match op {
                Op::Alloc(size) => {
                    let off = a.alloc(size).unwrap().0;
                    prop_assert!(off >= DATA_START && off.is_multiple_of(8));
                    prop_assert!(off + size <= a.end(), "past the high-water mark");
                    let e = extent(off, size);
                    for r in &live {
                        let other = extent(r.off, r.size);
                        prop_assert!(e.1 <= other.0 || other.1 <= e.0, "{e:?} overlaps live {other:?}");
                    }
                    for h in &held {
                        let waits = h.freed >= current
                            || (h.durability_bound && h.freed > durable);
                        prop_assert!(
                            !waits || e.1 <= h.extent.0 || h.extent.1 <= e.0,
                            "{e:?} reuses {h:?} too early (durable {durable}, txn {current})"
                        );
                    }
                    live.push(Record { off, size, born: current });
                }
                Op::Free(i) => {
                    if live.is_empty() {
                        continue;
                    }
                    let r = live.swap_remove(i % live.len());
                    a.free(Offset(r.off), r.size);
                    if r.born != current {
                        held.push(Held {
                            extent: extent(r.off, r.size),
                            freed: current,
                            durability_bound: r.born <= durable,
                        });
                    }
                }
                Op::Commit(is_durable) => {
                    txn = current;
                    summary = a.persist(TxnId(txn), TxnId(durable), false, &|_| true).unwrap();
                    a.committed(is_durable);
                    if is_durable {
                        durable = txn;
                    }
                    // The persisted state, read back as the next writer would.
                    let reloaded = Allocator::load(Pager::new(storage.clone()), &summary).unwrap();
                    let inv = reloaded.inventory().unwrap();
                    let mut taken = Ranges::default();
                    for &(o, s) in &inv.free {
                        taken.insert((o, o + s));
                    }
                    for &(start, pages) in inv.free_runs.iter().chain(&inv.pending_runs).chain(&inv.meta_runs) {
                        taken.insert((start, start + pages * PAGE_SIZE));
                    }
                    for r in &live {
                        let e = extent(r.off, r.size);
                        prop_assert!(taken.overlapping(e).is_none(), "live {e:?} listed as free or metadata");
                    }
                    committed = live.clone();
                    held_committed = held.clone();
                    a.begin_txn(TxnId(txn), TxnId(durable)).unwrap();
                }
                Op::Abort => {
                    a = Allocator::load(Pager::new(storage.clone()), &summary).unwrap();
                    a.begin_txn(TxnId(txn), TxnId(durable)).unwrap();
                    live = committed.clone();
                    held = held_committed.clone();
                }
            }
        }
    }
}

/// Durable commits whose syncs lag behind (group commit, DESIGN §4.3: while one sync is in
/// flight the next commits are staged, so the last commit known durable is always a few
/// behind the latest) reuse what they free once a sync covers it: the file stays the size of
/// what is live. A regression test: every commit's freed records merged into one pending batch
/// tagged with the newest commit, which no sync ever reached while commits kept coming, so
/// nothing freed was reused and the file grew by every commit's copies.
#[test]
fn space_freed_under_lagging_syncs_is_reused() {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new(256 << 20));
    storage.grow(DATA_START).unwrap();
    let mut a = Allocator::empty(Pager::new(storage.clone()));
    a.begin_txn(TxnId(0), TxnId(0)).unwrap();
    let mut live: Vec<Offset> = (0..64).map(|_| a.alloc(272).unwrap()).collect();
    a.persist(TxnId(1), TxnId(0), true, &|_| true).unwrap();
    a.committed(true);
    const LAG: u64 = 3;
    let mut end_after_warmup = 0;
    for txn in 2..2_000u64 {
        let durable = TxnId(txn.saturating_sub(LAG).max(1));
        a.begin_txn(TxnId(txn - 1), durable).unwrap();
        // A path copy: free an old record, allocate its replacement.
        let i = (txn as usize * 7) % live.len();
        a.free(live[i], 272);
        live[i] = a.alloc(272).unwrap();
        a.persist(TxnId(txn), durable, true, &|_| true).unwrap();
        a.committed(true);
        if txn == 100 {
            end_after_warmup = a.end();
        }
    }
    assert!(
        a.end() <= end_after_warmup + 16 * PAGE_SIZE,
        "the file grew from {end_after_warmup} to {} under lagging syncs",
        a.end()
    );
}
