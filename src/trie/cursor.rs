//! Iteration over a map, the one walk every iteration uses: ordered, resumable and
//! range-bounded. The cursor holds offsets, not borrows, so an owning iterator can keep it next
//! to the snapshot it reads, and its position (the last key returned) can be saved and
//! continued in another snapshot or process.
//!
//! The order is the *order key* of a key's hash ([`order_key`]: the 5-bit fragments of the
//! levels, the root's most significant), then the key's bytes (keys of one hash sit in a
//! collision node). A node's children are visited by increasing fragment whether they are leaves
//! or nodes, so the walk yields exactly that order, and a range of order keys is a set of
//! subtrees: partitions by hash prefix come out disjoint, and their union is the whole map.
//!
//! Every leaf is checked to lie on its key's hash path (I8), so the walk yields exactly what
//! lookups find: on a damaged file where they would disagree (a node's bitmap changed, say), the
//! walk fails with `Corrupt` (DESIGN §2.6.3). A walk of the whole map also checks the entry
//! count the map records.

use super::{KeyHasher, LeafRef, MapRoot, Reader, VERIFY_ON_READ_MAX};
use crate::error::{Result, corrupt};
use crate::format::*;

/// The position of a hash in iteration order.
pub(crate) fn order_key(hash: u64) -> u64 {
    let mut out = 0u64;
    for depth in 0..MAX_DEPTH {
        let bits = level_bits(depth);
        let frag = (hash >> (BITS_PER_LEVEL * depth)) & ((1u64 << bits) - 1);
        out = (out << bits) | frag;
    }
    out
}

/// Hash bits consumed at `depth` (5, but 4 at the last branch level).
fn level_bits(depth: u32) -> u32 {
    if depth == MAX_DEPTH - 1 { 64 - BITS_PER_LEVEL * depth } else { BITS_PER_LEVEL }
}

/// Order-key bits below the fragment of `depth` (the bits a subtree there leaves free).
fn free_bits(depth: u32) -> u32 {
    // Every level above the last takes 5 bits, the last the 4 left: 64 - 5 * (depth + 1), and
    // none at the last level.
    64u32.saturating_sub(BITS_PER_LEVEL * (depth + 1))
}

/// Where a cursor stands: after `(order key, key)` of the last entry returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Position {
    pub order: u64,
    pub key: Vec<u8>,
}

// A branch frame holds its node's children inline: a walk's stack has at most 14 frames, and
// boxing them would allocate once per node visited.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum Frame {
    /// A branch node at `depth` whose children's order keys start with `prefix`; children
    /// below fragment `next` are done.
    /// The node's bitmaps and children are kept (read and validated once, at the push);
    /// `hpath` holds the hash bits of the levels above it (the fragments the path took).
    Branch {
        off: Offset,
        depth: u32,
        prefix: u64,
        hpath: u64,
        next: u32,
        datamap: u32,
        nodemap: u32,
        children: [u64; 32],
    },
    /// A collision node, every leaf of key hash `hpath`: its children in key order, the first
    /// `next` done.
    Collision { order: Vec<u64>, next: usize, hpath: u64 },
}

/// An ordered walk over the entries of one map whose order keys lie in `lo..hi` (`hi` is
/// exclusive; `None` means to the end), resuming after a [`Position`].
#[derive(Clone, Debug)]
pub(crate) struct Cursor {
    stack: Vec<Frame>,
    root: MapRoot,
    lo: u64,
    hi: Option<u64>,
    /// The position the walk resumes after, until it returns its first entry (from then on the
    /// walk's own order keeps it past it).
    after: Option<Position>,
    /// The key hash and leaf of the last entry returned (its position, read when asked for).
    last: Option<(u64, Offset)>,
    started: bool,
    done: bool,
    /// Nodes a valid trie of this many entries can have: a bound on the walk (I9).
    budget: u64,
    /// Entries returned, counted against the map's record in a walk of the whole map.
    seen: u64,
    /// The walk covers the whole map (no bound, not resumed): its count can be checked.
    whole: bool,
}

impl Cursor {
    pub(crate) fn new(root: MapRoot, lo: u64, hi: Option<u64>, after: Option<Position>) -> Cursor {
        Cursor {
            whole: lo == 0 && hi.is_none() && after.is_none(),
            stack: Vec::new(),
            root,
            lo,
            hi,
            after,
            last: None,
            started: false,
            done: false,
            budget: (MAX_DEPTH as u64 + 1).saturating_mul(root.entries.saturating_add(1)),
            seen: 0,
        }
    }

    /// Entries still to come, when known: the walk covers the whole map (exact for an intact
    /// file) or has ended.
    pub(crate) fn remaining(&self) -> Option<u64> {
        if self.done {
            return Some(0);
        }
        self.whole.then(|| self.root.entries.saturating_sub(self.seen))
    }

    /// The position after the last entry returned (or the one it started after), read by `r`
    /// (the reader the walk reads with).
    pub(crate) fn position(&self, r: &Reader<'_>) -> Option<Position> {
        match self.last {
            // The leaf was read (validated) when it was returned: it reads again.
            Some((hash, off)) => {
                r.leaf(off).ok().map(|l| Position { order: order_key(hash), key: l.key.to_vec() })
            }
            None => self.after.clone(),
        }
    }

    /// Could a subtree whose order keys lie in `min..=max` hold an entry still to come?
    fn wanted(&self, min: u64, max: u64) -> bool {
        let floor = self.after.as_ref().map_or(self.lo, |p| p.order.max(self.lo));
        max >= floor && self.hi.is_none_or(|hi| min < hi)
    }

    /// Is the entry of key hash `hash` still to come? (A walk with no bound and no position
    /// to resume after takes every entry it reaches: no order key is computed.)
    fn takes(&self, hash: u64, key: &[u8]) -> bool {
        if self.lo == 0 && self.hi.is_none() && self.after.is_none() {
            return true;
        }
        self.includes(order_key(hash), key)
    }

    /// Is the entry `(order, key)` still to come?
    fn includes(&self, order: u64, key: &[u8]) -> bool {
        order >= self.lo
            && self.hi.is_none_or(|hi| order < hi)
            && self.after.as_ref().is_none_or(|p| (order, key) > (p.order, &p.key[..]))
    }

    fn spend(&mut self, off: Offset) -> Result<()> {
        self.budget = self
            .budget
            .checked_sub(1)
            .ok_or_else(|| corrupt(off.0, "trie has more nodes than its entries allow"))?;
        Ok(())
    }

    fn push(
        &mut self,
        r: &Reader<'_>,
        off: Offset,
        depth: u32,
        prefix: u64,
        hpath: u64,
    ) -> Result<()> {
        self.spend(off)?;
        if depth > MAX_DEPTH {
            return Err(corrupt(off.0, "trie deeper than its last level"));
        }
        let n = r.node(off)?;
        if n.kind == NODE_KIND_COLLISION {
            if depth != MAX_DEPTH {
                return Err(corrupt(off.0, "collision node above the last level"));
            }
            let mut leaves = Vec::with_capacity(n.children.len());
            for c in n.children {
                leaves.push((r.leaf(Offset(c.get()))?.key.to_vec(), c.get()));
            }
            leaves.sort();
            self.stack.push(Frame::Collision {
                order: leaves.into_iter().map(|l| l.1).collect(),
                next: 0,
                hpath,
            });
        } else {
            if depth == MAX_DEPTH {
                return Err(corrupt(off.0, "branch node at the last level"));
            }
            let mut children = [0u64; 32];
            for (c, x) in children.iter_mut().zip(n.children) {
                *c = x.get();
            }
            self.stack.push(Frame::Branch {
                off,
                depth,
                prefix,
                hpath,
                next: 0,
                datamap: n.datamap,
                nodemap: n.nodemap,
                children,
            });
        }
        Ok(())
    }

    /// The next entry, in order.
    pub(crate) fn next<'a>(
        &mut self,
        r: &Reader<'a>,
        h: &KeyHasher,
    ) -> Result<Option<LeafRef<'a>>> {
        if self.done {
            return Ok(None);
        }
        let res = self.step(r, h);
        if !matches!(res, Ok(Some(_))) {
            self.done = true;
            self.stack.clear();
        }
        res
    }

    fn step<'a>(&mut self, r: &Reader<'a>, h: &KeyHasher) -> Result<Option<LeafRef<'a>>> {
        let found = self.walk(r, h)?;
        if self.whole {
            match found {
                Some(l) if self.seen > self.root.entries => {
                    return Err(corrupt(l.off.0, "trie holds more entries than recorded"));
                }
                None if self.seen != self.root.entries => {
                    return Err(corrupt(
                        self.root.root.0,
                        "trie holds fewer entries than recorded",
                    ));
                }
                _ => {}
            }
        }
        Ok(found)
    }

    fn walk<'a>(&mut self, r: &Reader<'a>, h: &KeyHasher) -> Result<Option<LeafRef<'a>>> {
        if !self.started {
            self.started = true;
            if !self.root.is_empty() && self.wanted(0, u64::MAX) {
                self.push(r, self.root.root, 0, 0, 0)?;
            }
        }
        while let Some(top) = self.stack.last_mut() {
            match top {
                Frame::Collision { order, next, hpath } => {
                    let Some(&c) = order.get(*next) else {
                        self.stack.pop();
                        continue;
                    };
                    *next += 1;
                    let hpath = *hpath;
                    let l = r.leaf_for_read(Offset(c), VERIFY_ON_READ_MAX)?;
                    let hash = h.hash(l.key);
                    if hash != hpath {
                        return Err(corrupt(l.off.0, "leaf on the wrong hash path"));
                    }
                    if self.takes(hash, l.key) {
                        return Ok(Some(self.returned(hash, l)));
                    }
                }
                Frame::Branch { off, depth, prefix, hpath, next, datamap, nodemap, children } => {
                    let (off, depth, prefix, hpath) = (*off, *depth, *prefix, *hpath);
                    let (datamap, nodemap) = (*datamap, *nodemap);
                    let used = datamap | nodemap;
                    let rest = if *next >= 32 { 0 } else { used >> *next << *next };
                    if rest == 0 {
                        self.stack.pop();
                        continue;
                    }
                    let bit = rest.trailing_zeros();
                    *next = bit + 1;
                    let below = (1u32 << bit) - 1;
                    let leaf = datamap & (1 << bit) != 0;
                    let idx = if leaf {
                        (datamap & below).count_ones()
                    } else {
                        datamap.count_ones() + (nodemap & below).count_ones()
                    };
                    let child = Offset(children[idx as usize]);
                    if bit >= 1 << level_bits(depth) {
                        return Err(corrupt(off.0, "node bit past the key hash"));
                    }
                    let free = free_bits(depth);
                    let min = prefix | ((bit as u64) << free);
                    let max = min | if free == 0 { 0 } else { (1u64 << free) - 1 };
                    if !self.wanted(min, max) {
                        continue;
                    }
                    // The hash bits of the path to the child, this level's fragment included.
                    let hpath = hpath | ((bit as u64) << (BITS_PER_LEVEL * depth));
                    if leaf {
                        let l = r.leaf_for_read(child, VERIFY_ON_READ_MAX)?;
                        let hash = h.hash(l.key);
                        let bits = BITS_PER_LEVEL * (depth + 1);
                        let mask = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
                        if hash & mask != hpath {
                            return Err(corrupt(l.off.0, "leaf on the wrong hash path"));
                        }
                        if self.takes(hash, l.key) {
                            return Ok(Some(self.returned(hash, l)));
                        }
                    } else {
                        self.push(r, child, depth + 1, min, hpath)?;
                    }
                }
            }
        }
        Ok(None)
    }

    fn returned<'a>(&mut self, hash: u64, l: LeafRef<'a>) -> LeafRef<'a> {
        self.seen += 1;
        self.after = None;
        self.last = Some((hash, l.off));
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_bits_are_what_the_levels_leave() {
        for depth in 0..MAX_DEPTH {
            assert_eq!(free_bits(depth), 64 - (0..=depth).map(level_bits).sum::<u32>());
        }
    }
}
