//! pheap: a persistent dictionary of byte strings in one memory-mapped file.
//!
//! The entry point is [`Heap`]: open one with [`Heap::open`] (or [`Heap::options`]), change it
//! in a [`WriteTxn`], read it in a [`ReadTxn`]. The rest of this page is the project's README.
//!
#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod alloc;
mod check;
mod compact;
mod copy;
mod error;
mod format;
mod heap;
mod kind;
mod meta;
pub mod publish;
mod shared;
mod storage;
mod trie;
mod txn;
pub mod typed;

#[cfg(test)]
mod crash_tests;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod testkit;
#[cfg(test)]
mod tests;

pub use check::CheckReport;
pub use compact::CompactStats;
pub use copy::CopyStats;
pub use error::{Error, Result};
pub use format::{digest_hex, shard_of};
pub use heap::{Heap, HeapOptions, Stats};
pub use kind::Kind;
pub use meta::SkippedCommit;
pub use publish::PublishStats;
pub use storage::registry::ReaderInfo;
pub use txn::{
    Durability, Iter, IterPosition, Map, MapMut, OwnedBytes, OwnedIter, OwnedMap, OwnedValue,
    ReadTxn, Readable, SharedRead, Value, Writable, WriteTxn,
};

/// The `zerocopy` crate whose traits a typed record derives ([`typed::Record`]), re-exported so
/// that a user needs no dependency of their own. Name it in the derive:
///
/// ```
/// use pheap::zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
///
/// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
/// #[zerocopy(crate = "pheap::zerocopy")]
/// #[repr(C)]
/// struct Order { id: u64, price: f64, qty: u32, _pad: u32 } // no padding: see typed::Record
/// ```
pub use zerocopy;

/// The traits every read and write goes through: `use pheap::prelude::*;`.
pub mod prelude {
    pub use crate::{Readable, Writable};
}

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = format::MAX_KEY_LEN;
/// Longest value accepted.
pub const MAX_VALUE_LEN: usize = format::MAX_VALUE_LEN;
/// Values this long or longer are stored as one out-of-line part (64-byte aligned).
pub const OUT_OF_LINE_MIN: usize = format::OUT_OF_LINE_MIN;
/// Deepest nesting of maps (the top level is depth 0).
pub const MAX_NESTING: usize = format::MAX_NESTING;
/// The first eight bytes of every heap file.
pub const FILE_MAGIC: [u8; 8] = format::MAGIC;
/// Format version this build reads and writes.
pub const FORMAT_VERSION: u32 = format::FORMAT_VERSION;
/// Read transactions that can be live at once, across every process sharing a heap.
pub const MAX_READERS: u32 = format::READER_SLOTS;
