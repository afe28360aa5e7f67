//! Path-copying writes: insert and remove. Nodes the running transaction allocated itself are
//! rewritten in place; every other node on the path is copied and the old one freed.

use zerocopy::IntoBytes;

use super::value::{NewValue, encode_value};
use super::{KeyHasher, MAX_BRANCH_BYTES, MapRoot, NodeRef, Reader, fragment};
use crate::alloc::Allocator;
use crate::error::{Error, Result, corrupt};
use crate::format::*;

/// Child offsets of a node being rebuilt: inline up to 33 (a branch has at most 32, plus one
/// while it is edited), on the heap beyond (large collision nodes only).
// The inline variant is large on purpose: it lives on the stack and saves a heap allocation per
// node edited.
#[allow(clippy::large_enum_variant)]
pub(super) enum Kids {
    Inline([u64; 33], usize),
    Heap(Vec<u64>),
}

impl Kids {
    fn from_slice(v: &[u64]) -> Kids {
        if v.len() <= 33 {
            let mut buf = [0; 33];
            buf[..v.len()].copy_from_slice(v);
            Kids::Inline(buf, v.len())
        } else {
            Kids::Heap(v.to_vec())
        }
    }
    fn insert(&mut self, i: usize, v: u64) {
        match self {
            Kids::Inline(buf, len) if *len < 33 => {
                buf.copy_within(i..*len, i + 1);
                buf[i] = v;
                *len += 1;
            }
            Kids::Inline(buf, len) => {
                let mut h = buf[..*len].to_vec();
                h.insert(i, v);
                *self = Kids::Heap(h);
            }
            Kids::Heap(h) => h.insert(i, v),
        }
    }
    fn push(&mut self, v: u64) {
        let n = self.len();
        self.insert(n, v);
    }
    fn remove(&mut self, i: usize) -> u64 {
        match self {
            Kids::Inline(buf, len) => {
                let v = buf[i];
                buf.copy_within(i + 1..*len, i);
                *len -= 1;
                v
            }
            Kids::Heap(h) => h.remove(i),
        }
    }
}

impl std::ops::Deref for Kids {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        match self {
            Kids::Inline(buf, len) => &buf[..*len],
            Kids::Heap(h) => h,
        }
    }
}

impl std::ops::DerefMut for Kids {
    fn deref_mut(&mut self) -> &mut [u64] {
        match self {
            Kids::Inline(buf, len) => &mut buf[..*len],
            Kids::Heap(h) => h,
        }
    }
}

/// An owned copy of a node being rebuilt.
pub(super) struct NodeBuf {
    kind: u16,
    datamap: u32,
    nodemap: u32,
    pub(super) children: Kids,
}

impl NodeBuf {
    fn of(n: &NodeRef<'_>) -> NodeBuf {
        let children = if n.children.len() <= 33 {
            let mut buf = [0u64; 33];
            for (b, c) in buf.iter_mut().zip(n.children) {
                *b = c.get();
            }
            Kids::Inline(buf, n.children.len())
        } else {
            Kids::Heap(n.children.iter().map(|c| c.get()).collect())
        };
        NodeBuf { kind: n.kind, datamap: n.datamap, nodemap: n.nodemap, children }
    }

    pub(super) fn size(&self) -> u64 {
        NODE_HEADER_SIZE + 8 * self.children.len() as u64
    }

    /// The children that are leaves come first: how many.
    pub(super) fn leaf_count(&self) -> usize {
        NodeHeader::leaf_children(self.kind, self.datamap, self.children.len())
    }

    /// Encode into `small` when it fits, else into `large`.
    pub(super) fn encode<'b>(
        &self,
        small: &'b mut [u8; MAX_BRANCH_BYTES],
        large: &'b mut Vec<u8>,
    ) -> &'b [u8] {
        let size = self.size() as usize;
        let b: &mut [u8] = if size <= MAX_BRANCH_BYTES {
            &mut small[..size]
        } else {
            large.resize(size, 0);
            &mut large[..]
        };
        encode_node(b, self.kind, self.datamap, self.nodemap, &self.children);
        b
    }
}

/// A key's leaf, already written, being inserted.
#[derive(Clone, Copy)]
struct NewLeaf<'k> {
    off: u64,
    hash: u64,
    key: &'k [u8],
    is_map: bool,
}

/// The writer's side of the trie: an allocator plus the hasher.
pub(crate) struct TrieWriter<'a> {
    pub alloc: &'a mut Allocator,
    pub hasher: KeyHasher,
}

enum Removed {
    NotFound,
    /// The subtree became empty.
    Gone,
    /// The subtree is now this node.
    Node(u64),
    /// The subtree collapsed into this single leaf.
    Leaf(u64),
}

impl TrieWriter<'_> {
    pub(crate) fn reader(&self) -> Reader<'_> {
        Reader { view: self.alloc.view(), limit: self.alloc.end() }
    }

    pub(super) fn node_buf(&self, off: u64) -> Result<NodeBuf> {
        Ok(NodeBuf::of(&self.reader().node(Offset(off))?))
    }

    /// Write `node` over `old` (same size class, allocated by this transaction) or to a new
    /// record, freeing `old`.
    pub(super) fn store(&mut self, node: &NodeBuf, old: Option<(u64, u64)>) -> Result<u64> {
        let size = node.size();
        let (mut small, mut large) = ([0u8; MAX_BRANCH_BYTES], Vec::new());
        let bytes = node.encode(&mut small, &mut large);
        if let Some((o, osize)) = old
            && self.alloc.is_fresh(Offset(o))
            && class_of(osize) == class_of(size)
        {
            self.alloc.write(Offset(o), bytes)?;
            return Ok(o);
        }
        let off = self.alloc.alloc(size)?;
        self.alloc.write(off, bytes)?;
        if let Some((o, osize)) = old {
            self.alloc.free(Offset(o), osize);
        }
        Ok(off.0)
    }

    /// Write a new leaf for `key` -> `val`.
    pub(crate) fn write_leaf(&mut self, key: &[u8], val: &NewValue<'_>) -> Result<u64> {
        if key.len() > MAX_KEY_LEN {
            return Err(Error::KeyTooLarge { len: key.len(), max: MAX_KEY_LEN });
        }
        let mut region = Vec::new();
        let kind = tag_of_kind(val.kind());
        let (flags, val) = encode_value(val, &mut region);
        if val.len() > MAX_VALUE_LEN {
            return Err(Error::ValueTooLarge { len: val.len(), max: MAX_VALUE_LEN });
        }
        let size = leaf_size(key.len() as u64, val.len() as u64);
        let off = self.alloc.alloc(size)?;
        let hl = LEAF_HEADER_SIZE as usize;
        let head_len = hl + round8(key.len() as u64) as usize;
        let header = LeafHeader::new(kind, flags, key, val);
        let header = header.as_bytes();
        // Small leaves go out in one write from the stack.
        let mut small = [0u8; 256];
        if size as usize <= small.len() {
            small[..hl].copy_from_slice(header);
            small[hl..hl + key.len()].copy_from_slice(key);
            small[head_len..head_len + val.len()].copy_from_slice(val);
            self.alloc.write(off, &small[..size as usize])?;
            return Ok(off.0);
        }
        let mut head = Vec::with_capacity(head_len);
        head.extend_from_slice(header);
        head.extend_from_slice(key);
        head.resize(head_len, 0);
        self.alloc.write(off, &head)?;
        if !val.is_empty() {
            self.alloc.write(off.add(head_len as u64), val)?;
        }
        Ok(off.0)
    }

    /// Insert `key` -> `val` into `map`; returns the map after and whether the key existed. A
    /// key holding a map is replaced only by a map (the map's new root), and a key holding bytes
    /// only by bytes: otherwise [`Error::WrongKind`], and nothing changed (the new leaf and the
    /// parts `val` names are freed again). The replaced leaf and its parts are freed.
    pub(crate) fn insert(
        &mut self,
        map: MapRoot,
        key: &[u8],
        val: &NewValue<'_>,
    ) -> Result<(MapRoot, bool)> {
        let hash = self.hasher.hash(key);
        let off = match self.write_leaf(key, val) {
            Ok(off) => off,
            Err(e) => {
                if let NewValue::Parts { parts, .. } = val {
                    self.free_parts_of(parts);
                }
                return Err(e);
            }
        };
        let leaf = NewLeaf { off, hash, key, is_map: matches!(val, NewValue::Map(_)) };
        let res = if map.is_empty() {
            let node = NodeBuf {
                kind: NODE_KIND_BRANCH,
                datamap: 1 << fragment(hash, 0),
                nodemap: 0,
                children: Kids::from_slice(&[leaf.off]),
            };
            self.store(&node, None).map(|r| (r, false))
        } else {
            self.insert_at(map.root.0, 0, leaf)
        };
        let (root, existed) = match res {
            Ok(r) => r,
            Err(e @ Error::WrongKind { .. }) => {
                // Found before any node changed: undo the new leaf and its parts.
                self.free_leaf(Offset(off))?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let entries = map.entries + u64::from(!existed);
        Ok((MapRoot { root: Offset(root), entries }, existed))
    }

    /// Replace the leaf `existing` (same key as `leaf`) by `leaf`, if their kinds agree.
    fn replace(&mut self, existing: u64, leaf: &NewLeaf<'_>) -> Result<()> {
        let found = self.reader().leaf(Offset(existing))?.kind();
        if (found == Kind::Map) != leaf.is_map {
            let expected = if leaf.is_map { Kind::Map } else { Kind::Bytes };
            return Err(Error::WrongKind { key: leaf.key.to_vec(), expected, found });
        }
        self.free_leaf(Offset(existing)).map(|_| ())
    }

    fn insert_at(&mut self, off: u64, depth: u32, leaf: NewLeaf<'_>) -> Result<(u64, bool)> {
        if depth > MAX_DEPTH {
            return Err(corrupt(off, "trie deeper than its last level"));
        }
        let mut n = self.node_buf(off)?;
        let old = Some((off, n.size()));
        if n.kind == NODE_KIND_COLLISION {
            if depth != MAX_DEPTH {
                return Err(corrupt(off, "collision node above the last level"));
            }
            for i in 0..n.children.len() {
                let l = self.reader().leaf(Offset(n.children[i]))?;
                if l.key == leaf.key {
                    self.replace(n.children[i], &leaf)?;
                    n.children[i] = leaf.off;
                    return Ok((self.store(&n, old)?, true));
                }
            }
            n.children.push(leaf.off);
            return Ok((self.store(&n, old)?, false));
        }
        if depth == MAX_DEPTH {
            return Err(corrupt(off, "branch node at the last level"));
        }
        let bit = 1u32 << fragment(leaf.hash, depth);
        let didx = (n.datamap & (bit - 1)).count_ones() as usize;
        let nidx = n.datamap.count_ones() as usize + (n.nodemap & (bit - 1)).count_ones() as usize;
        if n.datamap & bit != 0 {
            let existing = n.children[didx];
            let l = self.reader().leaf(Offset(existing))?;
            if l.key == leaf.key {
                self.replace(existing, &leaf)?;
                n.children[didx] = leaf.off;
                return Ok((self.store(&n, old)?, true));
            }
            let other_hash = self.hasher.hash(l.key);
            let sub = self.make_pair(depth + 1, existing, other_hash, leaf)?;
            n.children.remove(didx);
            n.datamap &= !bit;
            n.nodemap |= bit;
            // After removing the leaf, node children start one earlier.
            n.children.insert(nidx - 1, sub);
            return Ok((self.store(&n, old)?, false));
        }
        if n.nodemap & bit != 0 {
            let child = n.children[nidx];
            let (new_child, existed) = self.insert_at(child, depth + 1, leaf)?;
            if new_child == child {
                return Ok((off, existed));
            }
            n.children[nidx] = new_child;
            return Ok((self.store(&n, old)?, existed));
        }
        n.datamap |= bit;
        n.children.insert(didx, leaf.off);
        Ok((self.store(&n, old)?, false))
    }

    /// Free a removed leaf and everything its value owns.
    fn free_value(&mut self, off: Offset) -> Result<()> {
        match self.free_leaf(off)? {
            Some(sub) => self.free_map(sub),
            None => Ok(()),
        }
    }

    /// The map holding exactly `leaves` (written leaves: their keys' hashes and offsets, sorted
    /// by [`super::order_key`] of the hash, keys distinct), built bottom-up: each node is written
    /// once, after its children, instead of a path copy per insert.
    pub(crate) fn build(&mut self, leaves: &[(u64, u64)]) -> Result<MapRoot> {
        if leaves.is_empty() {
            return Ok(MapRoot::EMPTY);
        }
        let root = self.build_node(leaves, 0)?;
        Ok(MapRoot { root: Offset(root), entries: leaves.len() as u64 })
    }

    /// The node at `depth` of `leaves` (at least two unless at the root), which share the hash
    /// fragments of the levels above.
    fn build_node(&mut self, leaves: &[(u64, u64)], depth: u32) -> Result<u64> {
        if depth == MAX_DEPTH {
            let children = Kids::Heap(leaves.iter().map(|l| l.1).collect());
            let node = NodeBuf { kind: NODE_KIND_COLLISION, datamap: 0, nodemap: 0, children };
            return self.store(&node, None);
        }
        let (mut datamap, mut nodemap) = (0u32, 0u32);
        let (mut leaf_kids, mut node_kids) = (Vec::new(), Vec::new());
        let mut i = 0;
        while i < leaves.len() {
            let f = fragment(leaves[i].0, depth);
            let j = i + leaves[i..].iter().take_while(|l| fragment(l.0, depth) == f).count();
            if j - i == 1 {
                datamap |= 1 << f;
                leaf_kids.push(leaves[i].1);
            } else {
                nodemap |= 1 << f;
                node_kids.push(self.build_node(&leaves[i..j], depth + 1)?);
            }
            i = j;
        }
        leaf_kids.extend(node_kids);
        let node = NodeBuf {
            kind: NODE_KIND_BRANCH,
            datamap,
            nodemap,
            children: Kids::from_slice(&leaf_kids),
        };
        self.store(&node, None)
    }

    /// A subtree at `depth` holding two leaves with different keys.
    fn make_pair(&mut self, depth: u32, a: u64, ha: u64, b: NewLeaf<'_>) -> Result<u64> {
        if depth == MAX_DEPTH {
            let node = NodeBuf {
                kind: NODE_KIND_COLLISION,
                datamap: 0,
                nodemap: 0,
                children: Kids::from_slice(&[a, b.off]),
            };
            return self.store(&node, None);
        }
        let (fa, fb) = (fragment(ha, depth), fragment(b.hash, depth));
        let node = if fa == fb {
            let sub = self.make_pair(depth + 1, a, ha, b)?;
            let children = Kids::from_slice(&[sub]);
            NodeBuf { kind: NODE_KIND_BRANCH, datamap: 0, nodemap: 1 << fa, children }
        } else {
            let pair = if fa < fb { [a, b.off] } else { [b.off, a] };
            let children = Kids::from_slice(&pair);
            NodeBuf { kind: NODE_KIND_BRANCH, datamap: (1 << fa) | (1 << fb), nodemap: 0, children }
        };
        self.store(&node, None)
    }

    /// Remove `key` from `map`, freeing its value (parts, and a sub-map's every record); returns
    /// the map after and whether the key was there.
    pub(crate) fn remove(&mut self, map: MapRoot, key: &[u8]) -> Result<(MapRoot, bool)> {
        if map.is_empty() {
            return Ok((map, false));
        }
        let hash = self.hasher.hash(key);
        let root = match self.remove_at(map.root.0, 0, hash, key)? {
            Removed::NotFound => return Ok((map, false)),
            Removed::Gone => Offset(0),
            Removed::Node(n) => Offset(n),
            Removed::Leaf(_) => unreachable!("the root never collapses into a leaf"),
        };
        // The key was found, so the map held at least one entry.
        Ok((MapRoot { root, entries: map.entries - 1 }, true))
    }

    fn remove_at(&mut self, off: u64, depth: u32, hash: u64, key: &[u8]) -> Result<Removed> {
        if depth > MAX_DEPTH {
            return Err(corrupt(off, "trie deeper than its last level"));
        }
        let mut n = self.node_buf(off)?;
        let old_size = n.size();
        if n.kind == NODE_KIND_COLLISION {
            if depth != MAX_DEPTH {
                return Err(corrupt(off, "collision node above the last level"));
            }
            for i in 0..n.children.len() {
                if self.reader().leaf(Offset(n.children[i]))?.key == key {
                    self.free_value(Offset(n.children[i]))?;
                    n.children.remove(i);
                    if n.children.len() == 1 {
                        self.alloc.free(Offset(off), old_size);
                        return Ok(Removed::Leaf(n.children[0]));
                    }
                    return Ok(Removed::Node(self.store(&n, Some((off, old_size)))?));
                }
            }
            return Ok(Removed::NotFound);
        }
        if depth == MAX_DEPTH {
            return Err(corrupt(off, "branch node at the last level"));
        }
        let bit = 1u32 << fragment(hash, depth);
        let didx = (n.datamap & (bit - 1)).count_ones() as usize;
        let nidx = n.datamap.count_ones() as usize + (n.nodemap & (bit - 1)).count_ones() as usize;
        if n.datamap & bit != 0 {
            if self.reader().leaf(Offset(n.children[didx]))?.key != key {
                return Ok(Removed::NotFound);
            }
            self.free_value(Offset(n.children[didx]))?;
            n.children.remove(didx);
            n.datamap &= !bit;
        } else if n.nodemap & bit != 0 {
            let child = n.children[nidx];
            match self.remove_at(child, depth + 1, hash, key)? {
                Removed::NotFound => return Ok(Removed::NotFound),
                Removed::Node(c) => {
                    if c == child {
                        return Ok(Removed::Node(off));
                    }
                    n.children[nidx] = c;
                }
                Removed::Gone => {
                    n.children.remove(nidx);
                    n.nodemap &= !bit;
                }
                Removed::Leaf(l) => {
                    n.children.remove(nidx);
                    n.nodemap &= !bit;
                    n.datamap |= bit;
                    n.children.insert(didx, l);
                }
            }
        } else {
            return Ok(Removed::NotFound);
        }
        if n.children.is_empty() {
            self.alloc.free(Offset(off), old_size);
            return Ok(Removed::Gone);
        }
        if depth > 0 && n.nodemap == 0 && n.children.len() == 1 {
            self.alloc.free(Offset(off), old_size);
            return Ok(Removed::Leaf(n.children[0]));
        }
        Ok(Removed::Node(self.store(&n, Some((off, old_size)))?))
    }
}
