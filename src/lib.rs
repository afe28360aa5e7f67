//! pheap: a persistent dictionary of byte strings in one memory-mapped file.
//!
//! Opening is O(1) (no load step); every commit is a consistent checkpoint; readers never block
//! and never see a partial commit. See `DESIGN.md` for the file format and the commit protocol.
//!
//! ```no_run
//! let heap = pheap::Heap::open("data.pheap")?;
//! let mut tx = heap.begin_write()?;
//! tx.insert(b"key", b"value")?;
//! tx.commit()?;
//! let rx = heap.begin_read()?;
//! assert_eq!(rx.get(b"key")?, Some(&b"value"[..]));
//! # Ok::<(), pheap::Error>(())
//! ```

#![deny(unsafe_code)]

mod alloc;
mod check;
mod compact;
mod copy;
mod env;
mod error;
mod format;
mod heap;
mod meta;
mod storage;
mod trie;
mod txn;

#[cfg(test)]
mod crash_tests;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod tests;

pub use check::CheckReport;
pub use compact::CompactStats;
pub use copy::CopyStats;
pub use error::{Error, Result};
pub use heap::{Heap, HeapOptions, Stats};
pub use meta::SkippedCommit;
pub use storage::registry::ReaderInfo;
pub use txn::{Durability, Iter, ReadTxn, WriteTxn};

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = format::MAX_KEY_LEN;
/// Longest value accepted.
pub const MAX_VALUE_LEN: usize = format::MAX_VALUE_LEN;
/// The first eight bytes of every heap file.
pub const FILE_MAGIC: [u8; 8] = format::MAGIC;
/// Format version this build reads and writes.
pub const FORMAT_VERSION: u32 = format::FORMAT_VERSION;
