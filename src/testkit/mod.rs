//! The test kit: one model, one operation enum with one harness that runs it against a heap,
//! one simulated-disk opener, shared by the crate's tests and the fuzz targets (feature
//! `fuzzing`; not part of the API). Randomness in tests comes from `rand`'s `SmallRng`.

mod disk;
mod harness;
mod history;
mod ops;

use std::collections::BTreeMap;

pub use disk::SimDisk;
pub use harness::Harness;
pub use history::History;
pub use ops::Op;

#[cfg(test)]
pub(crate) use disk::{CAP, boot_id, open_mem};
#[cfg(test)]
pub(crate) use ops::{file_ops, sim_ops};

use crate::{Heap, Iter, ReadTxn, Result, WriteTxn};

/// What a map holds, as the tests model it.
pub type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Every entry of the latest commit, each also read back by `get` (so a lookup and the walk
/// must agree), and the recorded count checked. Panics on any error.
pub fn contents(heap: &Heap) -> Model {
    let rx = heap.begin_read().expect("a read transaction");
    let m = snapshot(&rx).expect("the walk of the latest commit");
    assert_eq!(m.len() as u64, rx.len(), "entry count differs from the entries walked");
    for (k, v) in &m {
        assert_eq!(rx.get(k).expect("get"), Some(&v[..]), "get and the walk disagree");
    }
    m
}

/// Every entry an iteration yields.
fn collect(it: Iter<'_>) -> Result<Model> {
    it.map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec()))).collect()
}

/// Every entry of a read transaction's snapshot.
pub fn snapshot(rx: &ReadTxn) -> Result<Model> {
    collect(rx.iter())
}

/// Every entry as a write transaction sees it. Panics on any error.
pub fn txn_contents(tx: &WriteTxn) -> Model {
    let m = collect(tx.iter()).expect("the walk of a write transaction");
    assert_eq!(m.len() as u64, tx.len());
    m
}
