//! Iteration over every entry of a map, in hash order.

use super::{LeafRef, MapRoot, NodeRef, Reader, VERIFY_ON_READ_MAX};
use crate::error::{Result, corrupt};
use crate::format::*;

/// Depth-first iteration over every leaf; bounded so that a corrupt file (cycles, sharing) ends
/// in an error rather than a hang.
#[derive(Debug)]
pub(crate) struct Iter<'a> {
    reader: Reader<'a>,
    stack: Vec<(NodeRef<'a>, usize)>,
    root: Offset,
    started: bool,
    remaining: u64,
    budget: u64,
    failed: bool,
}

impl<'a> Iter<'a> {
    /// Iteration over `map` as `reader` sees it.
    pub(crate) fn new(reader: Reader<'a>, map: MapRoot) -> Iter<'a> {
        let (root, entries) = (map.root, map.entries);
        Iter {
            reader,
            stack: Vec::with_capacity(MAX_DEPTH as usize + 1),
            root,
            started: false,
            remaining: entries,
            // A valid trie of n entries has at most MAX_DEPTH nodes per entry.
            budget: (MAX_DEPTH as u64 + 1).saturating_mul(entries.saturating_add(1)),
            failed: false,
        }
    }

    fn push(&mut self, off: Offset) -> Result<()> {
        if self.budget == 0 {
            return Err(corrupt(off.0, "trie has more nodes than its entries allow"));
        }
        self.budget -= 1;
        if self.stack.len() > MAX_DEPTH as usize {
            return Err(corrupt(off.0, "trie deeper than its last level"));
        }
        let n = self.reader.node(off)?;
        self.stack.push((n, 0));
        Ok(())
    }

    fn step(&mut self) -> Result<Option<LeafRef<'a>>> {
        if !self.started {
            self.started = true;
            if self.root.0 != 0 {
                self.push(self.root)?;
            }
        }
        while let Some((n, i)) = self.stack.last_mut() {
            let (n, idx) = (*n, *i);
            if idx >= n.children.len() {
                self.stack.pop();
                continue;
            }
            *i += 1;
            let child = Offset(n.children[idx].get());
            if idx < n.leaf_count() {
                if self.remaining == 0 {
                    return Err(corrupt(child.0, "trie holds more entries than recorded"));
                }
                self.remaining -= 1;
                return self.reader.leaf_for_read(child, VERIFY_ON_READ_MAX).map(Some);
            }
            self.push(child)?;
        }
        if self.remaining != 0 {
            return Err(corrupt(self.root.0, "trie holds fewer entries than recorded"));
        }
        Ok(None)
    }
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
