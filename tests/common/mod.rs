//! Helpers shared by the integration tests (each test file that needs them has `mod common;`).
//! The crate's own tests and the fuzz targets share the fuller kit in `src/testkit`.
#![allow(dead_code)] // each test file uses a part

use pheap::prelude::*;
use std::collections::BTreeMap;

use pheap::{Heap, ReadTxn};
use rand::SeedableRng;
use rand::rngs::SmallRng;

/// What a map holds, as the tests model it.
pub type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Every entry of a snapshot.
pub fn snapshot(rx: &ReadTxn) -> pheap::Result<Model> {
    rx.iter().map(|r| r.and_then(|(k, v)| Ok((k.to_vec(), v.bytes()?.to_vec())))).collect()
}

/// Every entry of the latest commit. Panics on any error.
pub fn contents(heap: &Heap) -> Model {
    snapshot(&heap.begin_read().expect("a read transaction")).expect("the walk")
}

/// The tests' random numbers: seeded, so a failure repeats.
pub fn rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}
