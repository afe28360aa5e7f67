//! The copy-on-write hash trie (a CHAMP-style HAMT) over file offsets.
//!
//! Each level consumes 5 bits of the key's 64-bit keyed hash; a branch node lists its leaf
//! children (datamap) before its node children (nodemap). Canonical form (I8): below the root a
//! node never holds a single leaf and nothing else, so a key's path is as short as possible.
//! Reads validate every node and leaf they touch; writes copy the path, except nodes the running
//! transaction allocated itself, which are rewritten in place.

mod cursor;
mod prefetch;
mod read;
mod relocate;
#[cfg(test)]
mod tests;
mod value;
mod write;

use siphasher::sip::SipHasher13;
use std::hash::Hasher;

use crate::format::*;

pub(crate) use cursor::{Cursor, Position, order_key};
pub(crate) use read::{LeafRef, NodeRef, Reader};
pub(crate) use value::{NewValue, ValueRef};
pub(crate) use write::TrieWriter;

/// One map: the root node of its trie (`Offset(0)` when empty) and its number of entries. A
/// commit's meta slot holds the top-level map's; the two always travel together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MapRoot {
    pub root: Offset,
    pub entries: u64,
}

impl MapRoot {
    /// The empty map.
    pub(crate) const EMPTY: MapRoot = MapRoot { root: Offset(0), entries: 0 };

    pub(crate) fn is_empty(&self) -> bool {
        self.root.0 == 0
    }
}

/// The keyed hash of a key (SipHash-1-3 with the file's seed).
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyHasher {
    k0: u64,
    k1: u64,
}

impl KeyHasher {
    pub(crate) fn new(seed: [u64; 2]) -> KeyHasher {
        KeyHasher { k0: seed[0], k1: seed[1] }
    }
    #[inline]
    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write(key);
        h.finish()
    }
}

#[inline]
fn fragment(hash: u64, depth: u32) -> u32 {
    ((hash >> (BITS_PER_LEVEL * depth)) & 31) as u32
}

/// Encoded size of the largest branch node.
const MAX_BRANCH_BYTES: usize = NODE_HEADER_SIZE as usize + 32 * 8;

/// Run `f`, one level of map nesting deeper, on a stack with room for it. A walk into nested
/// maps recurses once per map level and once per trie level inside each: at the deepest nesting
/// a heap may hold ([`MAX_NESTING`]) a compaction took between 512 KiB and 1 MiB of stack in a
/// release build (5x more unoptimised), more than a thread of a small stack has (a test thread
/// of 256 KiB overflowed and aborted the process). Where less than [`STACK_RED_ZONE`] is left,
/// `f` runs on a fresh segment of [`STACK_SEGMENT`] bytes instead (the `stacker` crate).
pub(crate) fn one_map_deeper<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, f)
}

/// Stack that must be left before a walk goes one map level deeper.
const STACK_RED_ZONE: usize = 128 << 10;

/// Stack a walk is given when it has less than [`STACK_RED_ZONE`] left.
const STACK_SEGMENT: usize = 1 << 20;

/// Values up to this length are checked against their leaf's checksum by every read that
/// returns them (`get`, iteration): a damaged record is an error, never wrong bytes. Costs one
/// xxh3 pass over key and value, which the reader is about to touch anyway (measured in
/// docs/benchmarks.md, "Checksums on read"). Longer values are verified by `Heap::check` and
/// `ReadTxn::verify`; hashing a multi-megabyte value on every `get` would cost more than the
/// lookup by orders of magnitude and defeat zero-copy reads of large arrays.
pub(crate) const VERIFY_ON_READ_MAX: usize = 16 << 10;
