//! The copy-on-write hash trie (a CHAMP-style HAMT) over file offsets.
//!
//! Each level consumes 5 bits of the key's 64-bit keyed hash; a branch node lists its leaf
//! children (datamap) before its node children (nodemap). Canonical form (I8): below the root a
//! node never holds a single leaf and nothing else, so a key's path is as short as possible.
//! Reads validate every node and leaf they touch; writes copy the path, except nodes the running
//! transaction allocated itself, which are rewritten in place.

use siphasher::sip::SipHasher13;
use std::hash::Hasher;
use xxhash_rust::xxh3::xxh3_64_with_seed;
use zerocopy::FromBytes;
use zerocopy::little_endian::U64;

use crate::alloc::{Allocator, Evacuation};
use crate::error::{Error, Result, corrupt};
use crate::format::*;
use crate::storage::View;

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

/// Leaf checksum: xxh3 of the value seeded with xxh3 of the key seeded with the lengths and kind.
pub(crate) fn leaf_checksum(kind: u16, key: &[u8], val: &[u8]) -> u32 {
    let seed = ((key.len() as u64) << 32 | val.len() as u64) ^ ((kind as u64) << 48);
    xxh3_64_with_seed(val, xxh3_64_with_seed(key, seed)) as u32
}

/// Values up to this length are checked against their leaf's checksum by every read that
/// returns them (`get`, iteration): a damaged record is an error, never wrong bytes. Costs one
/// xxh3 pass over key and value, which the reader is about to touch anyway (measured in
/// docs/benchmarks.md, "Checksums on read"). Longer values are verified by `Heap::check` and
/// `ReadTxn::verify`; hashing a multi-megabyte value on every `get` would cost more than the
/// lookup by orders of magnitude and defeat zero-copy reads of large arrays.
pub(crate) const VERIFY_ON_READ_MAX: usize = 16 << 10;

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
    pub(crate) fn leaf_count(&self) -> usize {
        if self.kind == NODE_KIND_COLLISION {
            self.children.len()
        } else {
            self.datamap.count_ones() as usize
        }
    }
}

/// A validated view of a leaf.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LeafRef<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub kind: u16,
    pub checksum: u32,
}

impl LeafRef<'_> {
    pub(crate) fn size(&self) -> u64 {
        leaf_size(self.key.len() as u64, self.value.len() as u64)
    }

    /// Does the leaf's checksum hold?
    pub(crate) fn intact(&self) -> bool {
        leaf_checksum(self.kind, self.key, self.value) == self.checksum
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

    pub(crate) fn node(&self, off: u64) -> Result<NodeRef<'a>> {
        if off < DATA_START || !off.is_multiple_of(8) {
            return Err(corrupt(off, "node offset out of range or misaligned"));
        }
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

    pub(crate) fn leaf(&self, off: u64) -> Result<LeafRef<'a>> {
        if off < DATA_START || !off.is_multiple_of(8) {
            return Err(corrupt(off, "leaf offset out of range or misaligned"));
        }
        let h = LeafHeader::read_from_bytes(self.bytes(off, LEAF_HEADER_SIZE)?)
            .map_err(|_| corrupt(off, "leaf header"))?;
        let (kl, vl) = (h.key_len.get() as u64, h.val_len.get() as u64);
        if h.kind.get() != LEAF_KIND_BYTES || kl > MAX_KEY_LEN as u64 {
            return Err(corrupt(off, "invalid leaf header"));
        }
        let key = self.bytes(off + LEAF_HEADER_SIZE, kl)?;
        let value = self.bytes(off + LEAF_HEADER_SIZE + round8(kl), vl)?;
        Ok(LeafRef { key, value, kind: h.kind.get(), checksum: h.checksum.get() })
    }

    /// A leaf about to be returned to the user: verified when its value is at most `verify`
    /// bytes long.
    pub(crate) fn leaf_for_read(&self, off: u64, verify: usize) -> Result<LeafRef<'a>> {
        let l = self.leaf(off)?;
        if l.value.len() <= verify && !l.intact() {
            return Err(corrupt(off, "leaf checksum mismatch"));
        }
        Ok(l)
    }

    /// The value of `key`, whose hash is `hash`, under `root`; the leaves it reads are verified
    /// when their values are at most `verify` bytes long.
    pub(crate) fn get(
        &self,
        root: u64,
        hash: u64,
        key: &[u8],
        verify: usize,
    ) -> Result<Option<&'a [u8]>> {
        if root == 0 {
            return Ok(None);
        }
        let mut off = root;
        for depth in 0..=MAX_DEPTH {
            // The header and the child slot are in different cache lines of a large node, and
            // the slot's index comes from the header: fetch all of it at once (one miss, not two).
            self.view.prefetch(off, MAX_BRANCH_BYTES as u64);
            let n = self.node(off)?;
            if n.kind == NODE_KIND_COLLISION {
                if depth != MAX_DEPTH {
                    return Err(corrupt(off, "collision node above the last level"));
                }
                for c in n.children {
                    let l = self.leaf_for_read(c.get(), verify)?;
                    if l.key == key {
                        return Ok(Some(l.value));
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
                let l = self.leaf_for_read(leaf, verify)?;
                return Ok(if l.key == key { Some(l.value) } else { None });
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

/// Depth-first iteration over every leaf; bounded so that a corrupt file (cycles, sharing) ends
/// in an error rather than a hang.
#[derive(Debug)]
pub(crate) struct Iter<'a> {
    reader: Reader<'a>,
    stack: Vec<(NodeRef<'a>, usize)>,
    root: u64,
    started: bool,
    remaining: u64,
    budget: u64,
    failed: bool,
}

impl<'a> Iter<'a> {
    pub(crate) fn new(reader: Reader<'a>, root: u64, entries: u64) -> Iter<'a> {
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

    fn push(&mut self, off: u64) -> Result<()> {
        if self.budget == 0 {
            return Err(corrupt(off, "trie has more nodes than its entries allow"));
        }
        self.budget -= 1;
        if self.stack.len() > MAX_DEPTH as usize {
            return Err(corrupt(off, "trie deeper than its last level"));
        }
        let n = self.reader.node(off)?;
        self.stack.push((n, 0));
        Ok(())
    }

    fn step(&mut self) -> Result<Option<(&'a [u8], &'a [u8])>> {
        if !self.started {
            self.started = true;
            if self.root != 0 {
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
            let child = n.children[idx].get();
            if idx < n.leaf_count() {
                if self.remaining == 0 {
                    return Err(corrupt(child, "trie holds more entries than recorded"));
                }
                self.remaining -= 1;
                let l = self.reader.leaf_for_read(child, VERIFY_ON_READ_MAX)?;
                return Ok(Some((l.key, l.value)));
            }
            self.push(child)?;
        }
        if self.remaining != 0 {
            return Err(corrupt(self.root, "trie holds fewer entries than recorded"));
        }
        Ok(None)
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = Result<(&'a [u8], &'a [u8])>;
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

// ---------------------------------------------------------------------------------------------
// Mutation

/// Child offsets of a node being rebuilt: inline up to 33 (a branch has at most 32, plus one
/// while it is edited), on the heap beyond (large collision nodes only).
// The inline variant is large on purpose: it lives on the stack and saves a heap allocation per
// node edited.
#[allow(clippy::large_enum_variant)]
enum Kids {
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
struct NodeBuf {
    kind: u16,
    datamap: u32,
    nodemap: u32,
    children: Kids,
}

/// Encoded size of the largest branch node.
const MAX_BRANCH_BYTES: usize = NODE_HEADER_SIZE as usize + 32 * 8;

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

    fn size(&self) -> u64 {
        NODE_HEADER_SIZE + 8 * self.children.len() as u64
    }

    /// Encode into `small` when it fits, else into `large`.
    fn encode<'b>(
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
        b[0..4].copy_from_slice(&self.datamap.to_le_bytes());
        b[4..8].copy_from_slice(&self.nodemap.to_le_bytes());
        b[8..12].fill(0);
        b[12..14].copy_from_slice(&self.kind.to_le_bytes());
        b[14..16].copy_from_slice(&(self.children.len() as u16).to_le_bytes());
        for (dst, c) in b[16..].chunks_exact_mut(8).zip(self.children.iter()) {
            dst.copy_from_slice(&c.to_le_bytes());
        }
        let sum = node_checksum(b);
        b[8..12].copy_from_slice(&sum.to_le_bytes());
        b
    }
}

/// Checksum of an encoded node whose checksum field is zero.
pub(crate) fn node_checksum(encoded_with_zero_sum: &[u8]) -> u32 {
    xxhash_rust::xxh3::xxh3_64(encoded_with_zero_sum) as u32
}

/// A key's leaf, already written, being inserted.
#[derive(Clone, Copy)]
struct NewLeaf<'k> {
    off: u64,
    hash: u64,
    key: &'k [u8],
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
    fn reader(&self) -> Reader<'_> {
        Reader { view: self.alloc.view(), limit: self.alloc.end() }
    }

    fn node_buf(&self, off: u64) -> Result<NodeBuf> {
        Ok(NodeBuf::of(&self.reader().node(off)?))
    }

    /// Write `node` over `old` (same size class, allocated by this transaction) or to a new
    /// record, freeing `old`.
    fn store(&mut self, node: &NodeBuf, old: Option<(u64, u64)>) -> Result<u64> {
        let size = node.size();
        let (mut small, mut large) = ([0u8; MAX_BRANCH_BYTES], Vec::new());
        let bytes = node.encode(&mut small, &mut large);
        if let Some((o, osize)) = old
            && self.alloc.is_fresh(o)
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
    pub(crate) fn write_leaf(&mut self, key: &[u8], val: &[u8]) -> Result<u64> {
        if key.len() > MAX_KEY_LEN {
            return Err(Error::KeyTooLarge { len: key.len(), max: MAX_KEY_LEN });
        }
        if val.len() > MAX_VALUE_LEN {
            return Err(Error::ValueTooLarge { len: val.len(), max: MAX_VALUE_LEN });
        }
        let size = leaf_size(key.len() as u64, val.len() as u64);
        let off = self.alloc.alloc(size)?;
        let hl = LEAF_HEADER_SIZE as usize;
        let head_len = hl + round8(key.len() as u64) as usize;
        let mut header = [0u8; LEAF_HEADER_SIZE as usize];
        header[0..4].copy_from_slice(&(key.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&(val.len() as u32).to_le_bytes());
        header[8..12].copy_from_slice(&leaf_checksum(LEAF_KIND_BYTES, key, val).to_le_bytes());
        header[12..14].copy_from_slice(&LEAF_KIND_BYTES.to_le_bytes());
        // Small leaves go out in one write from the stack.
        let mut small = [0u8; 256];
        if size as usize <= small.len() {
            small[..hl].copy_from_slice(&header);
            small[hl..hl + key.len()].copy_from_slice(key);
            small[head_len..head_len + val.len()].copy_from_slice(val);
            self.alloc.write(off, &small[..size as usize])?;
            return Ok(off.0);
        }
        let mut head = Vec::with_capacity(head_len);
        head.extend_from_slice(&header);
        head.extend_from_slice(key);
        head.resize(head_len, 0);
        self.alloc.write(off, &head)?;
        if !val.is_empty() {
            self.alloc.write(off.add(head_len as u64), val)?;
        }
        Ok(off.0)
    }

    /// Insert `key` -> `val` under `root`; returns the new root and whether the key existed.
    pub(crate) fn insert(&mut self, root: u64, key: &[u8], val: &[u8]) -> Result<(u64, bool)> {
        let hash = self.hasher.hash(key);
        let leaf = NewLeaf { off: self.write_leaf(key, val)?, hash, key };
        if root == 0 {
            let node = NodeBuf {
                kind: NODE_KIND_BRANCH,
                datamap: 1 << fragment(hash, 0),
                nodemap: 0,
                children: Kids::from_slice(&[leaf.off]),
            };
            return Ok((self.store(&node, None)?, false));
        }
        self.insert_at(root, 0, leaf)
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
                let l = self.reader().leaf(n.children[i])?;
                if l.key == leaf.key {
                    let size = l.size();
                    self.alloc.free(Offset(n.children[i]), size);
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
            let l = self.reader().leaf(existing)?;
            if l.key == leaf.key {
                let size = l.size();
                self.alloc.free(Offset(existing), size);
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

    /// Remove `key` under `root`; returns the new root and whether the key was there.
    pub(crate) fn remove(&mut self, root: u64, key: &[u8]) -> Result<(u64, bool)> {
        if root == 0 {
            return Ok((0, false));
        }
        let hash = self.hasher.hash(key);
        match self.remove_at(root, 0, hash, key)? {
            Removed::NotFound => Ok((root, false)),
            Removed::Gone => Ok((0, true)),
            Removed::Node(n) => Ok((n, true)),
            Removed::Leaf(_) => unreachable!("the root never collapses into a leaf"),
        }
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
                let l = self.reader().leaf(n.children[i])?;
                if l.key == key {
                    let size = l.size();
                    self.alloc.free(Offset(n.children[i]), size);
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
            let l = self.reader().leaf(n.children[didx])?;
            if l.key != key {
                return Ok(Removed::NotFound);
            }
            let size = l.size();
            self.alloc.free(Offset(n.children[didx]), size);
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

/// Children of a node that are leaves: the first `leaf_count` (all of a collision node's).
fn leaf_count(n: &NodeBuf) -> usize {
    if n.kind == NODE_KIND_COLLISION { n.children.len() } else { n.datamap.count_ones() as usize }
}

/// Positions of a compaction pass: child `j` of the root's child `i` is position `64 i + j`.
const POSITIONS_PER_CHILD: usize = 64;

/// Compaction: records in the spans an [`Evacuation`] empties move to free places of the kept
/// spans (the lowest first), large records into lower free runs; every node above a moved
/// record is copied (path copying, as any write).
impl TrieWriter<'_> {
    /// A new place for the record at `off` of `size` bytes, if compaction moves it.
    fn evacuate(&mut self, off: u64, size: u64, plan: &Evacuation) -> Result<Option<Offset>> {
        if size > MAX_SLAB_SIZE {
            self.alloc.alloc_below(size, off)
        } else if plan.contains(off) {
            self.alloc.alloc_evacuate(size, plan)
        } else {
            Ok(None)
        }
    }

    /// Move the leaf at `off` if compaction moves it; returns where it is.
    fn lower_leaf(&mut self, off: u64, plan: &Evacuation, moved: &mut u64) -> Result<u64> {
        let size = self.reader().leaf(off)?.size();
        let Some(new) = self.evacuate(off, size, plan)? else { return Ok(off) };
        let bytes = self.alloc.read(off, size)?.to_vec();
        self.alloc.write(new, &bytes)?;
        self.alloc.free(Offset(off), size);
        *moved += size;
        Ok(new.0)
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
        if let Some(new) = self.evacuate(off, size, plan)? {
            let (mut small, mut large) = ([0u8; MAX_BRANCH_BYTES], Vec::new());
            self.alloc.write(new, buf.encode(&mut small, &mut large))?;
            self.alloc.free(Offset(off), size);
            *moved += size;
            return Ok(new.0);
        }
        if changed { self.store(buf, Some((off, size))) } else { Ok(off) }
    }

    fn lower_child(
        &mut self,
        n: &mut NodeBuf,
        i: usize,
        plan: &Evacuation,
        moved: &mut u64,
    ) -> Result<bool> {
        let c = n.children[i];
        let new = if i < leaf_count(n) {
            self.lower_leaf(c, plan, moved)?
        } else {
            self.lower_subtree(c, plan, moved)?
        };
        n.children[i] = new;
        Ok(new != c)
    }

    /// Move every record of the subtree at `off` that compaction moves; returns the subtree's
    /// new offset.
    fn lower_subtree(&mut self, off: u64, plan: &Evacuation, moved: &mut u64) -> Result<u64> {
        let mut n = self.node_buf(off)?;
        let mut changed = false;
        for i in 0..n.children.len() {
            changed |= self.lower_child(&mut n, i, plan, moved)?;
        }
        self.place_node(off, &n, changed, plan, moved)
    }

    /// One bounded step of a compaction pass over the trie at `root`: move the records under
    /// positions `from..` that `plan` moves, until at least `budget` bytes have moved. Returns the new root and the position to resume at (`None`: the pass is
    /// complete). Positions name subtrees two levels down, so a step's work is bounded by the
    /// budget plus one such subtree.
    pub(crate) fn lower_step(
        &mut self,
        root: u64,
        from: usize,
        plan: &Evacuation,
        budget: u64,
        moved: &mut u64,
    ) -> Result<(u64, Option<usize>)> {
        if root == 0 {
            return Ok((0, None));
        }
        let mut r = self.node_buf(root)?;
        let mut r_changed = false;
        let mut next = None;
        for i in from / POSITIONS_PER_CHILD..r.children.len() {
            if i < leaf_count(&r) {
                r_changed |= self.lower_child(&mut r, i, plan, moved)?;
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
                changed |= self.lower_child(&mut n, j, plan, moved)?;
            }
            let new = self.place_node(c, &n, changed, plan, moved)?;
            r.children[i] = new;
            r_changed |= new != c;
            if next.is_some() {
                break;
            }
        }
        Ok((self.place_node(root, &r, r_changed, plan, moved)?, next))
    }
}
