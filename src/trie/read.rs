//! Validated reads: every node and leaf is checked against the file's bounds and its own
//! structure before use (I9); leaves returned to the caller are checked against their checksum.

use zerocopy::FromBytes;
use zerocopy::little_endian::U64;

use super::{MAX_BRANCH_BYTES, MapRoot, fragment};
use crate::error::{Result, corrupt};
use crate::format::*;
use crate::storage::View;

/// A validated view of a node.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NodeRef<'a> {
    pub datamap: u32,
    pub nodemap: u32,
    pub kind: u16,
    pub checksum: u32,
    pub children: &'a [U64],
}

impl NodeRef<'_> {
    pub(crate) fn size(&self) -> u64 {
        NODE_HEADER_SIZE + 8 * self.children.len() as u64
    }
    /// The children that are leaves come first: how many.
    pub(crate) fn leaf_count(&self) -> usize {
        NodeHeader::leaf_children(self.kind, self.datamap, self.children.len())
    }
}

/// A validated view of a leaf: its kind and flags known, its key and value region in bounds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LeafRef<'a> {
    pub off: Offset,
    pub key: &'a [u8],
    /// The value region: the value itself, a [`MapValue`], or a part table.
    pub value: &'a [u8],
    pub kind: u16,
    pub flags: u16,
    pub checksum: u32,
}

impl LeafRef<'_> {
    pub(crate) fn size(&self) -> u64 {
        leaf_size(self.key.len() as u64, self.value.len() as u64)
    }

    /// Does the leaf's checksum hold?
    pub(crate) fn intact(&self) -> bool {
        leaf_checksum(self.kind, self.flags, self.key, self.value) == self.checksum
    }

    /// The value's kind (validated by [`Reader::leaf`]).
    pub(crate) fn kind(&self) -> Kind {
        kind_of_tag(self.kind).unwrap_or(Kind::Bytes)
    }

    /// The sub-map of a map leaf.
    pub(crate) fn map_root(&self) -> Option<MapRoot> {
        if self.kind != LEAF_KIND_MAP {
            return None;
        }
        let v = MapValue::read_from_bytes(self.value).ok()?;
        Some(MapRoot { root: Offset(v.root.get()), entries: v.entries.get() })
    }
}

/// Reads of one snapshot: bytes below `limit` (the snapshot's `end`) of a view.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    pub view: &'a View,
    pub limit: u64,
}

impl<'a> Reader<'a> {
    fn bytes(&self, off: u64, len: u64) -> Result<&'a [u8]> {
        self.view.slice(off, len, self.limit).ok_or_else(|| corrupt(off, "range past the end"))
    }

    /// The node at `off`, its header validated and its children inside the snapshot.
    pub(crate) fn node(&self, off: Offset) -> Result<NodeRef<'a>> {
        let off = off.0;
        if off < DATA_START || !off.is_multiple_of(8) {
            return Err(corrupt(off, "node offset out of range or misaligned"));
        }
        self.view.note_read();
        let h = NodeHeader::read_from_bytes(self.bytes(off, NODE_HEADER_SIZE)?)
            .map_err(|_| corrupt(off, "node header"))?;
        let (d, n, count) = (h.datamap.get(), h.nodemap.get(), h.count.get() as usize);
        let ok = match h.kind.get() {
            NODE_KIND_BRANCH => {
                d & n == 0 && count == (d.count_ones() + n.count_ones()) as usize && count > 0
            }
            NODE_KIND_COLLISION => d == 0 && n == 0 && count >= 2,
            _ => false,
        };
        if !ok {
            return Err(corrupt(off, "invalid node header"));
        }
        let body = self.bytes(off + NODE_HEADER_SIZE, 8 * count as u64)?;
        let children = <[U64]>::ref_from_bytes(body).map_err(|_| corrupt(off, "node body"))?;
        Ok(NodeRef {
            datamap: d,
            nodemap: n,
            kind: h.kind.get(),
            checksum: h.checksum.get(),
            children,
        })
    }

    /// The leaf at `off`, its header validated and its key and value inside the snapshot (its
    /// checksum is not checked: see [`Reader::leaf_for_read`]).
    pub(crate) fn leaf(&self, off: Offset) -> Result<LeafRef<'a>> {
        let off = off.0;
        if off < DATA_START || !off.is_multiple_of(8) {
            return Err(corrupt(off, "leaf offset out of range or misaligned"));
        }
        let h = LeafHeader::read_from_bytes(self.bytes(off, LEAF_HEADER_SIZE)?)
            .map_err(|_| corrupt(off, "leaf header"))?;
        let (kl, vl) = (h.key_len.get() as u64, h.val_len.get() as u64);
        let (kind, flags) = (h.kind.get(), h.flags.get());
        let ok = match kind_of_tag(kind) {
            None => false,
            Some(Kind::Map) => flags == 0 && vl == MAP_VALUE_SIZE,
            Some(_) => flags & !LEAF_FLAG_PARTS == 0,
        };
        if !ok || kl > MAX_KEY_LEN as u64 {
            return Err(corrupt(off, "invalid leaf header"));
        }
        let key = self.bytes(off + LEAF_HEADER_SIZE, kl)?;
        let value = self.bytes(off + LEAF_HEADER_SIZE + round8(kl), vl)?;
        Ok(LeafRef { off: Offset(off), key, value, kind, flags, checksum: h.checksum.get() })
    }

    /// A leaf about to be returned to the user: verified when its value is at most `verify`
    /// bytes long.
    pub(crate) fn leaf_for_read(&self, off: Offset, verify: usize) -> Result<LeafRef<'a>> {
        let l = self.leaf(off)?;
        if l.value.len() <= verify && !l.intact() {
            return Err(corrupt(off.0, "leaf checksum mismatch"));
        }
        Ok(l)
    }

    /// The leaf of `key`, whose hash is `hash`, under `root`; the leaves it reads are verified
    /// when their value regions are at most `verify` bytes long.
    pub(crate) fn get(
        &self,
        root: Offset,
        hash: u64,
        key: &[u8],
        verify: usize,
    ) -> Result<Option<LeafRef<'a>>> {
        if root.0 == 0 {
            return Ok(None);
        }
        let mut off = root.0;
        for depth in 0..=MAX_DEPTH {
            // The header and the child slot are in different cache lines of a large node, and
            // the slot's index comes from the header: fetch all of it at once (one miss, not two).
            self.view.prefetch(off, MAX_BRANCH_BYTES as u64);
            let n = self.node(Offset(off))?;
            if n.kind == NODE_KIND_COLLISION {
                if depth != MAX_DEPTH {
                    return Err(corrupt(off, "collision node above the last level"));
                }
                for c in n.children {
                    let l = self.leaf_for_read(Offset(c.get()), verify)?;
                    if l.key == key {
                        return Ok(Some(l));
                    }
                }
                return Ok(None);
            }
            if depth == MAX_DEPTH {
                return Err(corrupt(off, "branch node at the last level"));
            }
            let bit = 1u32 << fragment(hash, depth);
            if n.datamap & bit != 0 {
                let idx = (n.datamap & (bit - 1)).count_ones() as usize;
                let leaf = n.children[idx].get();
                // Header, key and value: the caller reads the value next.
                self.view.prefetch(leaf, LEAF_HEADER_SIZE + round8(key.len() as u64) + 192);
                // Verified whatever its key: a damaged key must not read as "absent".
                let l = self.leaf_for_read(Offset(leaf), verify)?;
                return Ok(if l.key == key { Some(l) } else { None });
            }
            if n.nodemap & bit == 0 {
                return Ok(None);
            }
            let idx = n.datamap.count_ones() + (n.nodemap & (bit - 1)).count_ones();
            off = n.children[idx as usize].get();
        }
        Err(corrupt(off, "trie deeper than its last level"))
    }
}
