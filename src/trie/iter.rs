//! Iteration over every entry of a map, in hash order.

use super::{KeyHasher, LeafRef, MapRoot, NodeRef, Reader, VERIFY_ON_READ_MAX};
use crate::error::{Result, corrupt};
use crate::format::*;

/// Depth-first iteration over every leaf; bounded so that a corrupt file (cycles, sharing) ends
/// in an error rather than a hang. Every leaf is checked to lie on its key's hash path (I8), so
/// the walk yields exactly what lookups find: on a damaged file where they would disagree (a
/// node's bitmap changed, say), the walk fails with `Corrupt` (DESIGN §2.6.3).
#[derive(Debug)]
pub(crate) struct Iter<'a> {
    reader: Reader<'a>,
    hasher: KeyHasher,
    /// The nodes being walked: each with the next child to visit, and the hash bits of the
    /// levels above it (the fragments the path to it took).
    stack: Vec<(NodeRef<'a>, usize, u64)>,
    root: Offset,
    started: bool,
    remaining: u64,
    budget: u64,
    failed: bool,
}

impl<'a> Iter<'a> {
    /// Iteration over `map` as `reader` sees it.
    pub(crate) fn new(reader: Reader<'a>, hasher: KeyHasher, map: MapRoot) -> Iter<'a> {
        let (root, entries) = (map.root, map.entries);
        Iter {
            reader,
            hasher,
            stack: Vec::with_capacity(MAX_DEPTH as usize + 1),
            root,
            started: false,
            remaining: entries,
            // A valid trie of n entries has at most MAX_DEPTH nodes per entry.
            budget: (MAX_DEPTH as u64 + 1).saturating_mul(entries.saturating_add(1)),
            failed: false,
        }
    }

    fn push(&mut self, off: Offset, path: u64) -> Result<()> {
        if self.budget == 0 {
            return Err(corrupt(off.0, "trie has more nodes than its entries allow"));
        }
        self.budget -= 1;
        if self.stack.len() > MAX_DEPTH as usize {
            return Err(corrupt(off.0, "trie deeper than its last level"));
        }
        let n = self.reader.node(off)?;
        self.stack.push((n, 0, path));
        Ok(())
    }

    fn step(&mut self) -> Result<Option<LeafRef<'a>>> {
        if !self.started {
            self.started = true;
            if self.root.0 != 0 {
                self.push(self.root, 0)?;
            }
        }
        while let Some((n, i, path)) = self.stack.last_mut() {
            let (n, idx, path) = (*n, *i, *path);
            if idx >= n.children.len() {
                self.stack.pop();
                continue;
            }
            *i += 1;
            let depth = self.stack.len() as u32 - 1;
            let child = Offset(n.children[idx].get());
            if idx < n.leaf_count() {
                if self.remaining == 0 {
                    return Err(corrupt(child.0, "trie holds more entries than recorded"));
                }
                self.remaining -= 1;
                let leaf = self.reader.leaf_for_read(child, VERIFY_ON_READ_MAX)?;
                // A collision node's leaves share every fragment; a branch's leaf adds its own.
                let (path, levels) = match n.kind {
                    NODE_KIND_COLLISION => (path, depth),
                    _ => (path | fragment_at(n.datamap, idx, depth, child)?, depth + 1),
                };
                if !on_path(self.hasher.hash(leaf.key), path, levels) {
                    return Err(corrupt(child.0, "leaf on the wrong hash path"));
                }
                return Ok(Some(leaf));
            }
            let below = fragment_at(n.nodemap, idx - n.leaf_count(), depth, child)?;
            self.push(child, path | below)?;
        }
        if self.remaining != 0 {
            return Err(corrupt(self.root.0, "trie holds fewer entries than recorded"));
        }
        Ok(None)
    }
}

/// The hash bits, at their place for `depth`, of the `nth` set bit of `bitmap` (the fragment of
/// a node's `nth` leaf or child, at `at`); `Corrupt` for a bit no hash has at that depth (the
/// last branch level uses 4 bits).
fn fragment_at(bitmap: u32, nth: usize, depth: u32, at: Offset) -> Result<u64> {
    let mut b = bitmap;
    for _ in 0..nth {
        b &= b.wrapping_sub(1);
    }
    let (fragment, shift) = (u64::from(b.trailing_zeros()), BITS_PER_LEVEL * depth);
    if shift >= 64 || (fragment << shift) >> shift != fragment {
        return Err(corrupt(at.0, "node bit past the key hash"));
    }
    Ok(fragment << shift)
}

/// Do the fragments of the first `levels` levels of `hash` equal `path`'s?
fn on_path(hash: u64, path: u64, levels: u32) -> bool {
    let bits = BITS_PER_LEVEL * levels;
    let mask = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
    hash & mask == path
}

impl<'a> Iter<'a> {
    /// Entries not yet returned (exact unless the file is corrupt).
    pub(crate) fn remaining(&self) -> u64 {
        if self.failed { 0 } else { self.remaining }
    }

    /// The reader the iteration reads with.
    pub(crate) fn reader(&self) -> Reader<'a> {
        self.reader
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = Result<LeafRef<'a>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(Some(kv)) => Some(Ok(kv)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
