//! Snapshots, read and write transactions, and the commit protocol.
//!
//! Commit (DESIGN.md §4): the transaction's records and the allocator blob are written to space
//! no snapshot can reach; a durable two-phase commit syncs them; the meta slot holding neither
//! the last durable nor the latest commit is overwritten (one atomic write); a durable commit
//! syncs (once more, or for the only time when one-phase) and becomes the last durable commit.
//! Readers pick the newest meta slot they can trust (I1), so they see either the old or the new
//! commit, never a mix, and never one older than the latest acknowledged.

mod commit;
mod group;
mod map;
mod owned;
mod read;
mod readable;
mod writable;
mod write;

pub use crate::shared::Durability;
pub use map::{Map, MapMut, Value};
pub use owned::{IterPosition, OwnedBytes, OwnedIter, OwnedMap, OwnedValue, SharedRead};
pub use read::ReadTxn;
pub use readable::{Iter, Readable};
pub use writable::Writable;
pub(crate) use write::Wait;
pub use write::WriteTxn;

#[cfg(test)]
pub(crate) use read::BEFORE_PIN;
