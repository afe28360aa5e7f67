//! Compaction's pass over the trie: records in the spans an evacuation empties move to lower
//! places, and every node above a moved record is copied.

use zerocopy::IntoBytes;

use super::MAX_BRANCH_BYTES;
use super::write::NodeBuf;
use super::{MapRoot, TrieWriter};
use crate::alloc::Evacuation;
use crate::error::{Result, corrupt};
use crate::format::*;

/// Positions of a compaction pass: child `j` of the root's child `i` is position `64 i + j`.
const POSITIONS_PER_CHILD: usize = 64;

/// Compaction: records in the spans an [`Evacuation`] empties move to free places of the kept
/// spans (the lowest first), large records into lower free runs; every node above a moved
/// record is copied (path copying, as any write).
impl TrieWriter<'_> {
    /// A new place for the record at `off` of `size` bytes, if compaction moves it.
    fn evacuate(&mut self, off: u64, size: u64, plan: &Evacuation) -> Result<Option<Offset>> {
        if size > MAX_SLAB_SIZE {
            self.alloc.alloc_below(size, Offset(off))
        } else if plan.contains(off) {
            self.alloc.alloc_evacuate(size, plan)
        } else {
            Ok(None)
        }
    }

    /// Move the leaf at `off` if compaction moves it, and what its value owns (a sub-map's
    /// records, out-of-line parts); returns where the leaf is. A leaf whose value changed (a
    /// new sub-map root, a moved part) is rewritten, like a node whose child moved.
    fn lower_leaf(
        &mut self,
        off: u64,
        plan: &Evacuation,
        moved: &mut u64,
        nesting: usize,
    ) -> Result<u64> {
        let r = self.reader();
        let l = r.leaf(Offset(off))?;
        let size = l.size();
        let (key, kind, flags) = (l.key.to_vec(), l.kind, l.flags);
        let sub = l.map_root();
        let parts = if flags & LEAF_FLAG_PARTS != 0 {
            let v = r.value(&l)?;
            Some((v.parts.to_vec(), v.inline.to_vec()))
        } else {
            None
        };
        let region = if let Some(sub) = sub {
            // A map nested deeper than the limit can only be a cycle of a forged file.
            if nesting >= MAX_NESTING {
                return Err(corrupt(off, "maps nested deeper than the limit"));
            }
            let root = if sub.is_empty() {
                0
            } else {
                super::one_map_deeper(|| self.lower_subtree(sub.root.0, plan, moved, nesting + 1))?
            };
            (root != sub.root.0).then(|| {
                MapValue { root: root.into(), entries: sub.entries.into() }.as_bytes().to_vec()
            })
        } else if let Some((mut parts, inline)) = parts {
            let mut changed = false;
            for p in &mut parts {
                changed |= self.lower_part(p, plan, moved)?;
            }
            changed.then(|| {
                let head = PartsHeader {
                    count: (parts.len() as u32).into(),
                    inline_len: (inline.len() as u32).into(),
                };
                [head.as_bytes(), parts.as_bytes(), &inline].concat()
            })
        } else {
            None
        };
        let Some(region) = region else {
            let Some(new) = self.evacuate(off, size, plan)? else { return Ok(off) };
            let bytes = self.alloc.read(Offset(off), size)?.to_vec();
            return self.relocate(off, &bytes, new, moved);
        };
        let header = LeafHeader::new(kind, flags, &key, &region);
        let mut bytes = Vec::with_capacity(size as usize);
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&key);
        bytes.resize((LEAF_HEADER_SIZE + round8(key.len() as u64)) as usize, 0);
        bytes.extend_from_slice(&region);
        bytes.resize(size as usize, 0);
        let new = match self.evacuate(off, size, plan)? {
            Some(new) => Some(new),
            None if self.alloc.is_fresh(Offset(off)) => {
                self.alloc.write(Offset(off), &bytes)?;
                return Ok(off);
            }
            None if size <= MAX_SLAB_SIZE => self.alloc.alloc_evacuate(size, plan)?,
            None => None,
        };
        let new = match new {
            Some(n) => n,
            None => self.alloc.alloc(size)?,
        };
        self.relocate(off, &bytes, new, moved)
    }

    /// Move the record of an out-of-line part if compaction moves it (its data copied a
    /// mebibyte at a time, to the new record's aligned start); returns whether it moved.
    fn lower_part(&mut self, p: &mut PartRef, plan: &Evacuation, moved: &mut u64) -> Result<bool> {
        let (rec, len) = (p.rec.get(), p.len.get());
        if rec == 0 {
            return Ok(false);
        }
        let size = part_record_size(len);
        let Some(new) = self.evacuate(rec, size, plan)? else { return Ok(false) };
        let (from, to) = (part_data_at(rec), part_data_at(new.0));
        let mut done = 0;
        while done < len {
            let n = (len - done).min(1 << 20);
            let chunk = self.alloc.read(Offset(from + done), n)?.to_vec();
            self.alloc.write(Offset(to + done), &chunk)?;
            done += n;
        }
        self.alloc.free(Offset(rec), size);
        *moved += size;
        p.rec = new.0.into();
        Ok(true)
    }

    /// Write the node at `off` (now `buf`; `changed` if a child moved) to its new place if
    /// compaction moves it, else copy it if it changed; returns where it is.
    fn place_node(
        &mut self,
        off: u64,
        buf: &NodeBuf,
        changed: bool,
        plan: &Evacuation,
        moved: &mut u64,
    ) -> Result<u64> {
        let size = buf.size();
        let (mut small, mut large) = ([0u8; MAX_BRANCH_BYTES], Vec::new());
        if let Some(new) = self.evacuate(off, size, plan)? {
            return self.relocate(off, buf.encode(&mut small, &mut large), new, moved);
        }
        if !changed {
            return Ok(off);
        }
        // A copy of a node whose child moved: like a moved record, below the limit and outside
        // the spans being emptied, unless it can be rewritten where it is (this transaction's
        // own copy). A copy left to the allocator's usual placement could land in a new span at
        // the file's end, which the last round would then leave there.
        // (Compaction changes child offsets only: the copy has the node's size.)
        let in_place = self.alloc.is_fresh(Offset(off));
        if !in_place
            && size <= MAX_SLAB_SIZE
            && let Some(new) = self.alloc.alloc_evacuate(size, plan)?
        {
            return self.relocate(off, buf.encode(&mut small, &mut large), new, moved);
        }
        self.store(buf, Some((off, size)))
    }

    /// Write `bytes` (the record at `off`, as it is to be) to `new`, which compaction allocated,
    /// and free `off`.
    fn relocate(&mut self, off: u64, bytes: &[u8], new: Offset, moved: &mut u64) -> Result<u64> {
        let size = bytes.len() as u64;
        self.alloc.write(new, bytes)?;
        self.alloc.free(Offset(off), size);
        *moved += size;
        Ok(new.0)
    }

    fn lower_child(
        &mut self,
        n: &mut NodeBuf,
        i: usize,
        plan: &Evacuation,
        moved: &mut u64,
        nesting: usize,
    ) -> Result<bool> {
        let c = n.children[i];
        let new = if i < n.leaf_count() {
            self.lower_leaf(c, plan, moved, nesting)?
        } else {
            self.lower_subtree(c, plan, moved, nesting)?
        };
        n.children[i] = new;
        Ok(new != c)
    }

    /// Move every record of the subtree at `off` that compaction moves; returns the subtree's
    /// new offset.
    fn lower_subtree(
        &mut self,
        off: u64,
        plan: &Evacuation,
        moved: &mut u64,
        nesting: usize,
    ) -> Result<u64> {
        let mut n = self.node_buf(off)?;
        let mut changed = false;
        for i in 0..n.children.len() {
            changed |= self.lower_child(&mut n, i, plan, moved, nesting)?;
        }
        self.place_node(off, &n, changed, plan, moved)
    }

    /// One bounded step of a compaction pass over the trie at `root`: move the records under
    /// positions `from..` that `plan` moves, until at least `budget` bytes have moved. Returns the new root and the position to resume at (`None`: the pass is
    /// complete). Positions name subtrees two levels down, so a step's work is bounded by the
    /// budget plus one such subtree.
    pub(crate) fn lower_step(
        &mut self,
        map: MapRoot,
        from: usize,
        plan: &Evacuation,
        budget: u64,
        moved: &mut u64,
    ) -> Result<(MapRoot, Option<usize>)> {
        if map.is_empty() {
            return Ok((map, None));
        }
        let root = map.root.0;
        let mut r = self.node_buf(root)?;
        let mut r_changed = false;
        let mut next = None;
        for i in from / POSITIONS_PER_CHILD..r.children.len() {
            if i < r.leaf_count() {
                r_changed |= self.lower_child(&mut r, i, plan, moved, 0)?;
                continue;
            }
            let c = r.children[i];
            let mut n = self.node_buf(c)?;
            let mut changed = false;
            let start =
                if i == from / POSITIONS_PER_CHILD { from % POSITIONS_PER_CHILD } else { 0 };
            for j in start..n.children.len() {
                if *moved >= budget {
                    next = Some(i * POSITIONS_PER_CHILD + j);
                    break;
                }
                changed |= self.lower_child(&mut n, j, plan, moved, 0)?;
            }
            let new = self.place_node(c, &n, changed, plan, moved)?;
            r.children[i] = new;
            r_changed |= new != c;
            if next.is_some() {
                break;
            }
        }
        let root = Offset(self.place_node(root, &r, r_changed, plan, moved)?);
        Ok((MapRoot { root, entries: map.entries }, next))
    }
}
