//! Bringing one map's records into memory ([`crate::Readable::prefetch`], DESIGN §4.6a): level
//! by level, each level's records asked for at once (in file order, neighbours merged into one
//! request), then read to find the next level; a sub-map's tree joins the level after its leaf,
//! and parts are asked for with the leaves that own them. The reads wait for what they read, so
//! the map is in memory when it returns.

use super::{MAX_BRANCH_BYTES, MapRoot, Reader};
use crate::error::{Result, corrupt};
use crate::format::*;

/// What a leaf is assumed to span before it is read (most are shorter; a longer one faults in
/// the rest when read).
const LEAF_HINT: u64 = 256;

impl Reader<'_> {
    /// Every record of the map at `root` and of its sub-maps in memory; returns the bytes asked
    /// for. Damage is an error, as on any read; a forged tree that reaches more records than the
    /// file can hold (a cycle) is one too, never a hang.
    pub(crate) fn prefetch_map(&self, root: MapRoot) -> Result<u64> {
        // (offset, depth) of the nodes of the next level.
        let mut nodes: Vec<(u64, u32)> = Vec::new();
        if root.root.0 != 0 {
            nodes.push((root.root.0, 0));
        }
        let most = self.limit / 8; // no snapshot holds more records
        let (mut seen, mut bytes) = (0u64, 0u64);
        let mut count = |off: u64| {
            seen += 1;
            if seen > most {
                return Err(corrupt(off, "a map reaches more records than its file holds"));
            }
            Ok(())
        };
        while !nodes.is_empty() {
            bytes += self.view.load(nodes.iter().map(|&(o, _)| (o, MAX_BRANCH_BYTES as u64)));
            let (mut leaves, mut next) = (Vec::new(), Vec::new());
            for &(off, depth) in &nodes {
                count(off)?;
                let n = self.node(Offset(off))?;
                let leaf_count = n.leaf_count();
                for (i, c) in n.children.iter().enumerate() {
                    if i < leaf_count {
                        leaves.push(c.get());
                    } else if depth >= MAX_DEPTH {
                        return Err(corrupt(off, "trie deeper than its last level"));
                    } else {
                        next.push((c.get(), depth + 1));
                    }
                }
            }
            bytes += self.view.load(leaves.iter().map(|&o| (o, LEAF_HINT)));
            let mut parts = Vec::new();
            for &off in &leaves {
                count(off)?;
                let l = self.leaf(Offset(off))?;
                if let Some(m) = l.map_root() {
                    if m.root.0 != 0 {
                        next.push((m.root.0, 0));
                    }
                } else if l.flags & LEAF_FLAG_PARTS != 0 {
                    for p in self.value(&l)?.parts {
                        parts.extend(self.part_range(p).filter(|&(_, len)| len > 0));
                    }
                }
            }
            bytes += self.view.load(parts.into_iter());
            nodes = next;
        }
        Ok(bytes)
    }
}
