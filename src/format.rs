//! On-disk byte layouts. Pure data: no I/O, no unsafe.
//!
//! Every persisted structure is a `zerocopy` type built from little-endian fields (alignment 1,
//! so a view can start at any offset), its size pinned by a const assertion. DESIGN.md gives the
//! same layouts byte by byte; a change here changes DESIGN.md and `FORMAT_VERSION` together.

use std::fmt;
use std::mem::offset_of;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};
use zerocopy::little_endian::{U16, U32, U64};

pub use crate::kind::Kind;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// File magic: "PHEAP", a NUL, CR LF (the CR LF catches text-mode mangling).
pub const MAGIC: [u8; 8] = *b"PHEAP\0\r\n";
/// The format version this build writes into new files. Version 2 adds value kinds (sub-maps,
/// tagged values) and out-of-line parts; every version-1 structure is a valid version-2 one with
/// the same meaning, so this build opens, reads and extends version-1 files as they are.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this build opens.
pub const MIN_FORMAT_VERSION: u32 = 1;
/// The unit of file growth, span allocation and meta-slot placement.
pub const PAGE_SIZE: u64 = 4096;
/// Offsets of the three meta slots; each sits alone in its page so that a torn write of one can
/// never damage another. A commit writes the slot holding neither the last durable commit nor
/// the latest one, so both stay readable while it is written.
pub const META_OFFSETS: [u64; META_SLOTS] = [PAGE_SIZE, 2 * PAGE_SIZE, 3 * PAGE_SIZE];
pub const META_SLOTS: usize = 3;
/// First byte the allocator may hand out.
pub const DATA_START: u64 = 4 * PAGE_SIZE;

/// A byte offset into the heap file. Zero is "none" (it lies in the header page, where no record
/// can live).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64);

impl Offset {
    pub fn add(self, n: u64) -> Offset {
        Offset(self.0 + n)
    }
}

impl fmt::Debug for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{:#x}", self.0)
    }
}

/// A commit's transaction id; strictly increasing across commits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct TxnId(pub u64);

/// Truncated xxh3, the checksum of every checksummed structure.
pub fn checksum64(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

// ---------------------------------------------------------------------------------------------
// Header (page 0)

/// Page 0, bytes 0..64. Written once when the file is created, never modified.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct FileHeader {
    /// 0..8: [`MAGIC`].
    pub magic: [u8; 8],
    /// 8..12: [`FORMAT_VERSION`] of the writer that created the file.
    pub version: U32,
    /// 12..16: page size; must equal [`PAGE_SIZE`].
    pub page_size: U32,
    /// 16..32: SipHash-1-3 key for key hashing, random per file.
    pub hash_seed: [U64; 2],
    /// 32..40: feature flags: [`HEADER_FLAG_SEALED`] or zero.
    pub flags: U64,
    /// 40..56: a sealed heap's digest ([`sealed_digest`]); zero otherwise.
    pub digest: [u8; 16],
    /// 56..64: xxh3 of bytes 0..56.
    pub checksum: U64,
}
const _: () = assert!(size_of::<FileHeader>() == 64);

impl FileHeader {
    pub fn compute_checksum(&self) -> u64 {
        checksum64(&self.as_bytes()[..56])
    }

    /// Is this a sealed heap (DESIGN §2.1a)?
    pub fn sealed(&self) -> bool {
        self.flags.get() & HEADER_FLAG_SEALED != 0
    }
}

/// Header flag: the file is sealed (DESIGN §2.1a): read-only for good, opened without a lock
/// file or any lock, described by the digest in the header.
pub const HEADER_FLAG_SEALED: u64 = 1;

/// The digest of a sealed heap: xxh3-128 of the whole file, its header's bytes 40..64 (the
/// digest and the header checksum) taken as zeros, as 16 little-endian bytes. `chunk(off, n)`
/// gives the file's `n` bytes at `off` (hashed where they lie: no copy but the header's);
/// `len` is the file's length.
pub fn sealed_digest<'a>(
    len: u64,
    mut chunk: impl FnMut(u64, u64) -> std::io::Result<&'a [u8]>,
) -> std::io::Result<[u8; 16]> {
    const CHUNK: u64 = 4 << 20;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut head = chunk(0, len.min(64))?.to_vec();
    let n = head.len();
    head[40.min(n)..].fill(0);
    h.update(&head);
    let mut at = n as u64;
    while at < len {
        let n = CHUNK.min(len - at);
        h.update(chunk(at, n)?);
        at += n;
    }
    Ok(h.digest128().to_le_bytes())
}

/// A sealed heap's digest as 32 lowercase hexadecimal digits, its bytes in file order (as `pheap
/// seal` prints it and a publication's manifest records it).
pub fn digest_hex(d: &[u8; 16]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The shard of `key` (its stored bytes) in a set of `n` shards (DESIGN §2.11): the high 64 bits
/// of xxh3-64 (seed 0) of the bytes times `n`, so shards are even and doubling `n` splits shard
/// `i` into `2i` and `2i + 1`. Seedless, and independent of every heap's own key-hash seed, so
/// any language computes it.
pub fn shard_of(key: &[u8], n: std::num::NonZeroU32) -> u32 {
    ((u128::from(xxhash_rust::xxh3::xxh3_64(key)) * u128::from(n.get())) >> 64) as u32
}

// ---------------------------------------------------------------------------------------------
// Meta slots (pages 1, 2 and 3)

/// Meta flag: the commit's data was synced before this slot was written, so the slot is valid
/// across a power loss whenever its own checksum is.
pub const META_DURABLE: u64 = 1;
/// Meta flag (with [`META_DURABLE`]): the commit was synced once, after the slot was written.
/// Valid across a power loss only if its allocator blob and every extent the blob lists hash to
/// `alloc_blob_checksum` and `data_checksum` as read back from disk.
pub const META_ONE_PHASE: u64 = 2;
/// Magic of a meta slot.
pub const META_MAGIC: [u8; 8] = *b"PHEAPMT1";

/// A meta slot: one commit's root of everything. 256 bytes at the start of page 1, 2 or 3
/// ([`META_OFFSETS`]).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct MetaSlot {
    /// 0..8: [`META_MAGIC`].
    pub magic: [u8; 8],
    /// 8..16: transaction id of this commit.
    pub txn: U64,
    /// 16..24: offset of the root trie node, 0 for an empty map.
    pub root: U64,
    /// 24..32: number of entries in the map.
    pub entries: U64,
    /// 32..40: allocator high-water mark: every record lies below it; the file is at least this long.
    pub end: U64,
    /// 40..48: offset of the allocator-state blob's run (0: the allocator is empty).
    pub alloc_blob: U64,
    /// 48..56: length in bytes of the blob payload.
    pub alloc_blob_len: U64,
    /// 56..64: xxh3 of the blob payload.
    pub alloc_blob_checksum: U64,
    /// 64..72: bytes in records reachable from this commit, metadata included.
    pub live_bytes: U64,
    /// 72..80: bytes free or awaiting reuse below `end`.
    pub free_bytes: U64,
    /// 80..88: flags ([`META_DURABLE`]).
    pub flags: U64,
    /// 88..104: kernel boot id when the slot was written (zero where unknown).
    pub boot_id: [u8; 16],
    /// 104..112: with [`META_ONE_PHASE`], xxh3 of the bytes of the extents listed in the blob,
    /// in order; else zero.
    pub data_checksum: U64,
    /// 112..248: reserved, zero.
    pub reserved: [u8; 136],
    /// 248..256: xxh3 of bytes 0..248.
    pub checksum: U64,
}
pub const META_SIZE: usize = 256;
/// [`MetaSlot::txn`], from the slot's start.
pub const META_TXN_AT: u64 = offset_of!(MetaSlot, txn) as u64;
/// [`MetaSlot::checksum`], from the slot's start (written last).
pub const META_CHECKSUM_AT: u64 = offset_of!(MetaSlot, checksum) as u64;
const _: () = assert!(size_of::<MetaSlot>() == META_SIZE);

impl MetaSlot {
    pub fn compute_checksum(&self) -> u64 {
        checksum64(&self.as_bytes()[..META_SIZE - 8])
    }
    pub fn new_zeroed() -> MetaSlot {
        MetaSlot::read_from_bytes(&[0u8; META_SIZE]).expect("size matches")
    }
}

// ---------------------------------------------------------------------------------------------
// Runs: every allocated page run starts with a RunHeader

/// Run kinds.
pub const RUN_SLAB: u16 = 1;
pub const RUN_RECORD: u16 = 2;
pub const RUN_META: u16 = 3;
pub const RUN_MAGIC: u32 = 0x4e55_5250; // "PRUN"

/// The first 16 bytes of every allocated run of pages: a slab span of one size class, one large
/// record, or allocator metadata. Written when the run is allocated, never modified after.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct RunHeader {
    /// 0..4: [`RUN_MAGIC`].
    pub magic: U32,
    /// 4..6: [`RUN_SLAB`], [`RUN_RECORD`] or [`RUN_META`].
    pub kind: U16,
    /// 6..8: size class (slabs only, else 0).
    pub class: U16,
    /// 8..12: length of the run in pages.
    pub pages: U32,
    /// 12..16: low 32 bits of xxh3 of bytes 0..12.
    pub checksum: U32,
}
pub const RUN_HEADER_SIZE: u64 = 16;
const _: () = assert!(size_of::<RunHeader>() == RUN_HEADER_SIZE as usize);

impl RunHeader {
    pub fn new(kind: u16, class: u16, pages: u32) -> RunHeader {
        let mut h = RunHeader {
            magic: RUN_MAGIC.into(),
            kind: kind.into(),
            class: class.into(),
            pages: pages.into(),
            checksum: 0.into(),
        };
        h.checksum = h.compute_checksum().into();
        h
    }
    pub fn compute_checksum(&self) -> u32 {
        checksum64(&self.as_bytes()[..12]) as u32
    }
    pub fn is_valid(&self) -> bool {
        self.magic.get() == RUN_MAGIC && self.checksum.get() == self.compute_checksum()
    }
}

// ---------------------------------------------------------------------------------------------
// Trie nodes and leaves

pub const NODE_KIND_BRANCH: u16 = 0x4e42; // "BN"
pub const NODE_KIND_COLLISION: u16 = 0x4e43; // "CN"
/// Leaf kinds (the value's kind, DESIGN §2.6.1): plain bytes.
pub const LEAF_KIND_BYTES: u16 = 0x4c42; // "BL"
/// A sub-map: the value is a [`MapValue`] (its trie root and entry count).
pub const LEAF_KIND_MAP: u16 = 0x4c4d; // "ML"
/// Tagged values: kinds `LEAF_KIND_TAGGED | t` for tags `t` in 0..=255 are opaque to the engine
/// (bytes and parts, like [`LEAF_KIND_BYTES`]); higher layers own them (DESIGN §2.6.1).
pub const LEAF_KIND_TAGGED: u16 = 0x5400; // "T" + tag

/// The kind a leaf's tag names; `None` for a tag no writer produces.
pub fn kind_of_tag(tag: u16) -> Option<Kind> {
    match tag {
        LEAF_KIND_BYTES => Some(Kind::Bytes),
        LEAF_KIND_MAP => Some(Kind::Map),
        t if t & 0xff00 == LEAF_KIND_TAGGED => Some(Kind::Tagged(t as u8)),
        _ => None,
    }
}

/// The leaf tag of a kind.
pub fn tag_of_kind(kind: Kind) -> u16 {
    match kind {
        Kind::Bytes => LEAF_KIND_BYTES,
        Kind::Map => LEAF_KIND_MAP,
        Kind::Tagged(t) => LEAF_KIND_TAGGED | t as u16,
    }
}

/// Leaf flag: the value is a part table ([`PartsHeader`], its [`PartRef`]s, the inline part).
pub const LEAF_FLAG_PARTS: u16 = 1;

/// Header of a trie node, followed by `count` child offsets (`U64`): first the leaves of the set
/// bits of `datamap` in bit order, then the nodes of the set bits of `nodemap`. A collision node
/// (only at depth [`MAX_DEPTH`]) has both maps zero and `count` leaves.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct NodeHeader {
    /// 0..4: children that are leaves, one bit per hash fragment.
    pub datamap: U32,
    /// 4..8: children that are nodes; disjoint from `datamap`.
    pub nodemap: U32,
    /// 8..12: low 32 bits of xxh3 over the node with this field zeroed.
    pub checksum: U32,
    /// 12..14: [`NODE_KIND_BRANCH`] or [`NODE_KIND_COLLISION`].
    pub kind: U16,
    /// 14..16: number of children.
    pub count: U16,
}
pub const NODE_HEADER_SIZE: u64 = 16;
const _: () = assert!(size_of::<NodeHeader>() == NODE_HEADER_SIZE as usize);

/// Header of a leaf record: key at +16, value at +16 + round8(key_len), so the value payload is
/// 8-byte aligned.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct LeafHeader {
    /// 0..4: key length in bytes.
    pub key_len: U32,
    /// 4..8: value length in bytes.
    pub val_len: U32,
    /// 8..12: [`leaf_checksum`] of the kind, key and value (covering the lengths too).
    pub checksum: U32,
    /// 12..14: the value's kind: [`LEAF_KIND_BYTES`], [`LEAF_KIND_MAP`] or a tagged kind.
    pub kind: U16,
    /// 14..16: [`LEAF_FLAG_PARTS`] or zero (always zero in version 1).
    pub flags: U16,
}
pub const LEAF_HEADER_SIZE: u64 = 16;
const _: () = assert!(size_of::<LeafHeader>() == LEAF_HEADER_SIZE as usize);

impl NodeHeader {
    /// The children that are leaves come first: how many (all of a collision node's).
    pub fn leaf_children(kind: u16, datamap: u32, count: usize) -> usize {
        if kind == NODE_KIND_COLLISION { count } else { datamap.count_ones() as usize }
    }
}

/// Encode a node into `out`, which is exactly `NODE_HEADER_SIZE + 8 * children.len()` bytes:
/// header, children, then the checksum over both (taken with the checksum field zero).
pub fn encode_node(out: &mut [u8], kind: u16, datamap: u32, nodemap: u32, children: &[u64]) {
    debug_assert_eq!(out.len() as u64, NODE_HEADER_SIZE + 8 * children.len() as u64);
    let mut h = NodeHeader {
        datamap: datamap.into(),
        nodemap: nodemap.into(),
        checksum: 0.into(),
        kind: kind.into(),
        count: (children.len() as u16).into(),
    };
    let (head, body) = out.split_at_mut(NODE_HEADER_SIZE as usize);
    head.copy_from_slice(h.as_bytes());
    for (dst, c) in body.chunks_exact_mut(8).zip(children) {
        dst.copy_from_slice(&c.to_le_bytes());
    }
    h.checksum = node_checksum(out).into();
    out[..NODE_HEADER_SIZE as usize].copy_from_slice(h.as_bytes());
}

/// A node's checksum: low 32 bits of xxh3 over its encoding with the checksum field zero.
pub fn node_checksum(encoded_with_zero_sum: &[u8]) -> u32 {
    xxh3_64(encoded_with_zero_sum) as u32
}

impl LeafHeader {
    /// The header of a leaf of `kind` and `flags` holding `key` and the value region `val`, its
    /// checksum computed.
    pub fn new(kind: u16, flags: u16, key: &[u8], val: &[u8]) -> LeafHeader {
        LeafHeader {
            key_len: (key.len() as u32).into(),
            val_len: (val.len() as u32).into(),
            checksum: leaf_checksum(kind, flags, key, val).into(),
            kind: kind.into(),
            flags: flags.into(),
        }
    }
}

/// A leaf's checksum: xxh3 of the value region seeded with xxh3 of the key seeded with the
/// lengths, the kind and the flags (so it covers every header field but the checksum). With
/// zero flags it is version 1's checksum.
pub fn leaf_checksum(kind: u16, flags: u16, key: &[u8], val: &[u8]) -> u32 {
    let seed = ((key.len() as u64) << 32 | val.len() as u64)
        ^ ((kind as u64) << 48)
        ^ ((flags as u64).rotate_right(8));
    xxh3_64_with_seed(val, xxh3_64_with_seed(key, seed)) as u32
}

/// The value of a [`LEAF_KIND_MAP`] leaf: a sub-map.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct MapValue {
    /// 0..8: offset of the map's root node, 0 when empty.
    pub root: U64,
    /// 8..16: entries in the map.
    pub entries: U64,
}
pub const MAP_VALUE_SIZE: u64 = 16;
const _: () = assert!(size_of::<MapValue>() == MAP_VALUE_SIZE as usize);

/// Start of a value region with [`LEAF_FLAG_PARTS`]: then `count` [`PartRef`]s, then the inline
/// part (`inline_len` bytes). The region is exactly that long.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct PartsHeader {
    /// 0..4: out-of-line parts (at least 1).
    pub count: U32,
    /// 4..8: length of the inline part.
    pub inline_len: U32,
}
pub const PARTS_HEADER_SIZE: u64 = 8;
const _: () = assert!(size_of::<PartsHeader>() == PARTS_HEADER_SIZE as usize);

/// An out-of-line part: a record of [`part_record_size`]`(len)` bytes at `rec`, whose data starts
/// at [`part_data_at`]`(rec)` (64-byte aligned). An empty part has no record (`rec` 0).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct PartRef {
    /// 0..8: offset of the part's record (8-aligned), 0 for an empty part.
    pub rec: U64,
    /// 8..16: length of the part's data.
    pub len: U64,
    /// 16..24: xxh3 of the part's data.
    pub checksum: U64,
}
pub const PART_REF_SIZE: u64 = 24;
const _: () = assert!(size_of::<PartRef>() == PART_REF_SIZE as usize);

/// Alignment of out-of-line parts' data.
pub const PART_ALIGN: u64 = 64;
/// Values this long or longer are written as one out-of-line part, so they start aligned.
pub const OUT_OF_LINE_MIN: usize = 4096;
/// Most out-of-line parts of one value.
pub const MAX_PARTS: usize = 1 << 16;

/// Size of the record holding a part of `len` bytes: room to align its start (records are
/// 8-aligned) plus the data.
pub fn part_record_size(len: u64) -> u64 {
    len + PART_ALIGN - 8
}

/// Where the data of the part whose record is at `rec` starts.
pub fn part_data_at(rec: u64) -> u64 {
    rec.next_multiple_of(PART_ALIGN)
}

/// Bits of hash consumed per trie level.
pub const BITS_PER_LEVEL: u32 = 5;
/// Depth of collision nodes: levels 0..=12 consume the 64 hash bits (5 each, 4 at level 12).
pub const MAX_DEPTH: u32 = 13;

pub const MAX_KEY_LEN: usize = 1 << 20;
/// Deepest nesting of maps: the top level is depth 0, its sub-maps depth 1, and so on.
pub const MAX_NESTING: usize = 256;
/// Longest value, and longest part of a multi-part value.
pub const MAX_VALUE_LEN: usize = u32::MAX as usize;

pub fn round8(n: u64) -> u64 {
    (n + 7) & !7
}

/// Size of a leaf record for a key and a value of these lengths.
pub fn leaf_size(key_len: u64, val_len: u64) -> u64 {
    round8(LEAF_HEADER_SIZE + round8(key_len) + val_len)
}

// ---------------------------------------------------------------------------------------------
// Size classes

/// Largest record placed in a slab; larger ones get a run of their own.
pub const MAX_SLAB_SIZE: u64 = 65536;

const fn build_classes() -> [u32; NUM_CLASSES] {
    let mut out = [0u32; NUM_CLASSES];
    let mut i = 0;
    let mut s = 16u32;
    while s <= 512 {
        out[i] = s;
        i += 1;
        s += 8;
    }
    let mut base = 512u32;
    while base < MAX_SLAB_SIZE as u32 {
        let step = base / 8;
        let mut k = 1;
        while k <= 8 {
            out[i] = base + step * k;
            i += 1;
            k += 1;
        }
        base *= 2;
    }
    out
}

/// 16..=512 in steps of 8, then 8 classes per doubling up to 64 KiB.
pub const NUM_CLASSES: usize = 63 + 7 * 8;
pub const CLASS_SIZES: [u32; NUM_CLASSES] = build_classes();
const _: () = assert!(CLASS_SIZES[NUM_CLASSES - 1] as u64 == MAX_SLAB_SIZE);
const _: () = assert!(CLASS_SIZES[62] == 512 && CLASS_SIZES[63] == 576);

/// The smallest class holding `size` bytes (`size <= MAX_SLAB_SIZE`).
pub fn class_of(size: u64) -> usize {
    debug_assert!(size <= MAX_SLAB_SIZE);
    if size <= 16 {
        0
    } else if size <= 512 {
        (size - 16).div_ceil(8) as usize
    } else {
        CLASS_SIZES.partition_point(|&c| (c as u64) < size)
    }
}

/// Pages in a slab span of `class`: the smallest span wasting at most 1/16 of itself.
pub const fn span_pages(class: usize) -> u32 {
    let s = CLASS_SIZES[class] as u64;
    let mut k = 1u64;
    loop {
        let bytes = k * PAGE_SIZE;
        if bytes >= s + RUN_HEADER_SIZE {
            let waste = (bytes - RUN_HEADER_SIZE) % s + RUN_HEADER_SIZE;
            if waste * 16 <= bytes {
                return k as u32;
            }
        }
        k += 1;
    }
}

/// Slots in a slab span of `class`.
pub const fn span_slots(class: usize) -> u32 {
    ((span_pages(class) as u64 * PAGE_SIZE - RUN_HEADER_SIZE) / CLASS_SIZES[class] as u64) as u32
}

/// Pages of a run holding one record of `size` bytes after its run header.
pub fn record_run_pages(size: u64) -> u64 {
    (size + RUN_HEADER_SIZE).div_ceil(PAGE_SIZE)
}

// ---------------------------------------------------------------------------------------------
// Allocator state (read only by writers and the integrity walk)

/// A freed record awaiting reuse, packed in one `u64`:
/// - a slab slot: bits 0..48 offset / 8, bits 48..64 its class (below [`NUM_CLASSES`]);
/// - a whole run: bits 60..64 all set, bits 0..39 its first page number, bits 39..60 its
///   length in pages (a released run may be reused at once, so its header is never trusted to
///   give the length later).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freed {
    Slot { off: u64, class: usize },
    Run { start: u64, pages: u64 },
}

const RUN_TAG: u64 = 0xf << 60;
/// Longest run a freed entry can describe (8 GiB; records are at most 4 GiB + 1 MiB).
pub const MAX_FREED_RUN_PAGES: u64 = (1 << 21) - 1;

impl Freed {
    pub fn pack(self) -> u64 {
        match self {
            Freed::Slot { off, class } => (off >> 3) | ((class as u64) << 48),
            Freed::Run { start, pages } => {
                assert!(pages <= MAX_FREED_RUN_PAGES && start / PAGE_SIZE < 1 << 39);
                RUN_TAG | (pages << 39) | (start / PAGE_SIZE)
            }
        }
    }

    /// Decode; `None` for an entry no writer produces.
    pub fn unpack(v: u64) -> Option<Freed> {
        if v & RUN_TAG == RUN_TAG {
            let pages = (v >> 39) & MAX_FREED_RUN_PAGES;
            Some(Freed::Run { start: (v & ((1 << 39) - 1)) * PAGE_SIZE, pages })
        } else {
            let class = (v >> 48) as usize;
            (class < NUM_CLASSES).then_some(Freed::Slot { off: (v & ((1 << 48) - 1)) << 3, class })
        }
    }
}

/// A chunk page (a one-page `RUN_META` run): after the run header, this header and up to
/// [`CHUNK_CAPACITY`] `U64` entries. Chunks form immutable chains.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct ChunkHeader {
    /// 0..8: next (older) chunk of the chain, 0 at the end.
    pub next: U64,
    /// 8..12: entries in this chunk.
    pub count: U32,
    /// 12..16: low 32 bits of xxh3 over bytes 0..12 and the entries.
    pub checksum: U32,
}
pub const CHUNK_HEADER_SIZE: u64 = 16;
const _: () = assert!(size_of::<ChunkHeader>() == CHUNK_HEADER_SIZE as usize);

/// A chunk's checksum: low 32 bits of xxh3 over its `next` and `count` fields (bytes 0..12) and
/// its entries, little-endian.
pub fn chunk_checksum(next: u64, entries: &[u64]) -> u32 {
    let mut buf = Vec::with_capacity(12 + entries.len() * 8);
    buf.extend_from_slice(&next.to_le_bytes());
    buf.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        buf.extend_from_slice(&e.to_le_bytes());
    }
    checksum64(&buf) as u32
}
pub const CHUNK_CAPACITY: usize = ((PAGE_SIZE - RUN_HEADER_SIZE - CHUNK_HEADER_SIZE) / 8) as usize;

/// Allocator blob header. The blob (payload of a `RUN_META` run, checksummed in the meta slot)
/// is, in this order (DESIGN §2.7): this header; `extent_count` [`Extent`] (one-phase commits
/// only); `class_count` [`ClassEntry`]; each listed class's top entries (`U64`), in the order of
/// the entries; `run_count` [`FreeRun`]; `pending_count` [`PendingEntry`], each followed by its
/// inline `U64` entries.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct BlobHeader {
    /// 0..4: number of class entries (at most [`NUM_CLASSES`]).
    pub class_count: U32,
    /// 4..8: number of free runs.
    pub run_count: U32,
    /// 8..12: number of pending batches.
    pub pending_count: U32,
    /// 12..16: number of extents.
    pub extent_count: U32,
}
const _: () = assert!(size_of::<BlobHeader>() == 16);

/// A byte range a one-phase commit wrote (besides its blob and meta slot).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct Extent {
    /// 0..8: first byte.
    pub off: U64,
    /// 8..16: length.
    pub len: U64,
}
const _: () = assert!(size_of::<Extent>() == 16);
/// Most bytes a one-phase commit may have written outside its blob.
pub const MAX_ONE_PHASE_BYTES: u64 = 256 << 10;
/// Most extents a one-phase commit may list.
pub const MAX_ONE_PHASE_EXTENTS: usize = 512;

/// One size class's persistent state; the blob lists only classes with a span or free slots.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct ClassEntry {
    /// 0..2: the class index.
    pub class: U16,
    /// 2..4: reserved, zero.
    pub reserved: U16,
    /// 4..8: next never-used slot of `span`.
    pub next_slot: U32,
    /// 8..12: free slots held inline in the blob (the stack's top).
    pub top_len: U32,
    /// 12..16: reserved, zero.
    pub reserved2: U32,
    /// 16..24: the span slots are being carved from (0: none).
    pub span: U64,
    /// 24..32: first chunk of the chain holding the rest of the free stack (0: none).
    pub below: U64,
    /// 32..40: entries in that chain.
    pub below_len: U64,
}
const _: () = assert!(size_of::<ClassEntry>() == 40);

/// A free run of pages.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct FreeRun {
    /// 0..8: offset of the first page.
    pub start: U64,
    /// 8..16: length in pages.
    pub pages: U64,
}
const _: () = assert!(size_of::<FreeRun>() == 16);

/// Records freed by commit `txn` (or merged batches, by commits up to `txn`), reusable once no
/// snapshot older than `txn` is pinned and, unless [`PENDING_READER_ONLY`], `txn` is durable.
/// Entries are packed [`Freed`]: `inline` of them follow in the blob, the rest (`chained`) are in
/// the chunk chain starting at `chain`.
/// Pending flag: every record of the batch was allocated after the last durable commit, so no
/// durable commit references it and only readers hold it back.
pub const PENDING_READER_ONLY: u32 = 1;

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct PendingEntry {
    /// 0..8: the freeing commit.
    pub txn: U64,
    /// 8..16: first chunk of the chain (0: none).
    pub chain: U64,
    /// 16..20: entries inline after this struct.
    pub inline: U32,
    /// 20..24: flags ([`PENDING_READER_ONLY`]).
    pub flags: U32,
    /// 24..32: entries in the chain.
    pub chained: U64,
}
const _: () = assert!(size_of::<PendingEntry>() == 32);

// ---------------------------------------------------------------------------------------------
// The lock file (`<heap>-lock`): the shared reader registry. Never synced, never trusted across
// a time when no process had it open (the first opener re-initialises it).

/// Magic of the lock file.
pub const LOCK_MAGIC: [u8; 8] = *b"PHEAPLK1";
/// Reader slots in the registry: the most read transactions that can be live at once across
/// every process.
pub const READER_SLOTS: u32 = 8192;
/// Offset of reader slot 0 in the lock file.
pub const READER_SLOTS_OFFSET: u64 = PAGE_SIZE;
/// Length of the lock file.
pub const LOCK_FILE_LEN: u64 = READER_SLOTS_OFFSET + READER_SLOTS as u64 * 64;
/// Byte-range locks (open-file-description locks; the bytes need not exist in the file). Byte 0
/// is not used: the one writer of all processes holds [`LockHeader::writer`] instead (a word,
/// taken without a system call when no one else holds it; DESIGN §5.2).
///
/// Held exclusively while a handle opens (checks or re-initialises) the lock file.
pub const LOCK_BYTE_INIT: u64 = 1;
/// Held shared by every open handle; the opener that gets it exclusively is alone.
pub const LOCK_BYTE_OPEN: u64 = 2;
/// Held shared by unregistered readers (read-only handles without write access to the lock file)
/// while they have a live read transaction.
pub const LOCK_BYTE_ANON: u64 = 3;
/// Reader slot `i` is owned by whoever holds byte `LOCK_BYTE_SLOTS + i` exclusively.
pub const LOCK_BYTE_SLOTS: u64 = 1024;
/// A handle that has taken the writer lock holds byte `LOCK_BYTE_LIVENESS + k` exclusively until
/// it closes, `k` below [`LIVENESS_BYTES`] (drawn at random, the next free one on a collision):
/// the writer word names `k + 1` while the handle holds the writer lock.
pub const LOCK_BYTE_LIVENESS: u64 = 1 << 40;
/// How many liveness bytes there are.
pub const LIVENESS_BYTES: u32 = 1 << 30;
/// Locks on bytes of the heap file itself (through a description of its own; the bytes are
/// never written for it). Held while a handle joins the heap (exclusive for writable handles,
/// shared for read-only ones), and by whoever replaces the file (a copy onto it).
pub const HEAP_LOCK_BYTE_JOIN: u64 = 0;
/// Held shared by every open handle of the heap, in any process, whichever lock file it uses: an
/// opener alone on its lock file who finds it held knows another handle uses another lock file.
pub const HEAP_LOCK_BYTE_OPEN: u64 = 1;

/// Lock-file bytes 0..64. Every field after `hwm` is changed only under the locks named.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct LockHeader {
    /// 0..8: [`LOCK_MAGIC`].
    pub magic: [u8; 8],
    /// 8..16: [`lock_signature`] of the build that initialised the file.
    pub signature: U64,
    /// 16..20: [`READER_SLOTS`].
    pub slot_count: U32,
    /// 20..24: size of a [`ReaderSlot`].
    pub slot_size: U32,
    /// 24..28: number of slots ever claimed since initialisation (atomic; scans stop there).
    pub hwm: U32,
    /// 28..32: pid of the process that last began a write transaction (diagnostic).
    pub writer_pid: U32,
    /// 32..40: the latest commit when the writer last found no unregistered reader (atomic;
    /// written by the writer only): unregistered readers hold no snapshot older than it.
    pub anon_clear_txn: U64,
    /// 40..48: token of the handle that last took the writer lock (atomic; written under it):
    /// a handle finding its own token knows the heap file's length has not changed since.
    pub writer_token: U64,
    /// 48..56: 1 + the latest commit when the writer lock was last released with everything its
    /// holder wrote synced (atomic; written under the writer lock); 0 when not known so. A writer
    /// taking the lock while it still names the latest commit need not settle (DESIGN §5.5).
    pub settled_txn: U64,
    /// 56..60: the writer lock (atomic; a futex word): 0 when free, else 1 + the liveness byte
    /// of the handle holding it ([`LOCK_BYTE_LIVENESS`]), with [`WRITER_WAITERS`] set while
    /// another handle waits for it.
    pub writer: U32,
    /// 60..64: reserved, zero.
    pub reserved: [u8; 4],
}
const _: () = assert!(size_of::<LockHeader>() == 64);

/// The bit of [`LockHeader::writer`] that says a handle waits for the writer lock (its holder
/// wakes the waiters when it releases it).
pub const WRITER_WAITERS: u32 = 1 << 31;

/// A reader slot: 64 bytes (one cache line, so readers in different processes never share one),
/// at `READER_SLOTS_OFFSET + 64 * i`. Written only by the process holding the slot's lock byte,
/// with atomic stores; read by writers with atomic loads.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
pub struct ReaderSlot {
    /// 0..8: 1 + the transaction id of the pinned snapshot; 0 when nothing is pinned.
    pub pin: U64,
    /// 8..16: the pinned snapshot's `end`.
    pub end: U64,
    /// 16..20: pid of the owning process (diagnostic).
    pub pid: U32,
    /// 20..24: reserved, zero.
    pub reserved0: U32,
    /// 24..32: when the snapshot was pinned, in nanoseconds since the Unix epoch (diagnostic).
    pub since: U64,
    /// 32..64: reserved, zero.
    pub reserved: [u8; 32],
}
const _: () = assert!(size_of::<ReaderSlot>() == 64);

// Offsets of the lock-file fields that processes share through atomic loads and stores (the
// registry addresses them in the mapping; the structs above define them).
/// [`LockHeader::hwm`].
pub const LOCK_HWM_AT: u64 = offset_of!(LockHeader, hwm) as u64;
/// [`LockHeader::writer_pid`].
pub const LOCK_WRITER_PID_AT: u64 = offset_of!(LockHeader, writer_pid) as u64;
/// [`LockHeader::anon_clear_txn`].
pub const LOCK_ANON_CLEAR_AT: u64 = offset_of!(LockHeader, anon_clear_txn) as u64;
/// [`LockHeader::writer_token`].
pub const LOCK_WRITER_TOKEN_AT: u64 = offset_of!(LockHeader, writer_token) as u64;
/// Offset of [`LockHeader::settled_txn`].
pub const LOCK_SETTLED_AT: u64 = offset_of!(LockHeader, settled_txn) as u64;
/// [`LockHeader::writer`].
pub const LOCK_WRITER_AT: u64 = offset_of!(LockHeader, writer) as u64;
/// [`ReaderSlot::pin`], from the slot's start.
pub const SLOT_PIN_AT: u64 = offset_of!(ReaderSlot, pin) as u64;
/// [`ReaderSlot::end`].
pub const SLOT_END_AT: u64 = offset_of!(ReaderSlot, end) as u64;
/// [`ReaderSlot::pid`].
pub const SLOT_PID_AT: u64 = offset_of!(ReaderSlot, pid) as u64;
/// [`ReaderSlot::since`].
pub const SLOT_SINCE_AT: u64 = offset_of!(ReaderSlot, since) as u64;

/// Offset of reader slot `i` in the lock file.
pub const fn reader_slot_at(i: u32) -> u64 {
    READER_SLOTS_OFFSET + i as u64 * size_of::<ReaderSlot>() as u64
}

/// A digest of every constant and layout of the lock file: two builds share a lock file only
/// if they agree on all of it.
pub fn lock_signature() -> u64 {
    let desc = format!(
        "pheap-lock/4 le{} header{} slot{} slots{} at{} writer{} locks{},{},{},{},{}+{} heap{},{} page{}",
        cfg!(target_endian = "little"),
        size_of::<LockHeader>(),
        size_of::<ReaderSlot>(),
        READER_SLOTS,
        READER_SLOTS_OFFSET,
        LOCK_WRITER_AT,
        LOCK_BYTE_INIT,
        LOCK_BYTE_OPEN,
        LOCK_BYTE_ANON,
        LOCK_BYTE_SLOTS,
        LOCK_BYTE_LIVENESS,
        LIVENESS_BYTES,
        HEAP_LOCK_BYTE_JOIN,
        HEAP_LOCK_BYTE_OPEN,
        PAGE_SIZE,
    );
    checksum64(desc.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_increasing_aligned_and_spans_fit() {
        for i in 1..NUM_CLASSES {
            assert!(CLASS_SIZES[i] > CLASS_SIZES[i - 1]);
            assert_eq!(CLASS_SIZES[i] % 8, 0);
        }
        for (c, &size) in CLASS_SIZES.iter().enumerate() {
            assert!(span_slots(c) >= 1, "class {c}");
            let used = span_slots(c) as u64 * size as u64 + RUN_HEADER_SIZE;
            let bytes = span_pages(c) as u64 * PAGE_SIZE;
            assert!(used <= bytes && (bytes - used) * 16 <= bytes, "class {c}");
        }
    }

    #[test]
    fn class_of_is_the_smallest_fit() {
        for size in 1..=MAX_SLAB_SIZE {
            let c = class_of(size);
            assert!(CLASS_SIZES[c] as u64 >= size);
            assert!(c == 0 || (CLASS_SIZES[c - 1] as u64) < size);
        }
    }

    #[test]
    fn freed_packing_round_trips() {
        for f in [
            Freed::Slot { off: 0x1234_5678_9ab8, class: 77 },
            Freed::Slot { off: DATA_START, class: NUM_CLASSES - 1 },
            Freed::Run { start: DATA_START, pages: 1 },
            Freed::Run { start: ((1 << 39) - 1) * PAGE_SIZE, pages: MAX_FREED_RUN_PAGES },
        ] {
            assert_eq!(Freed::unpack(f.pack()), Some(f));
        }
        assert_eq!(Freed::unpack((NUM_CLASSES as u64) << 48), None);
        assert!(
            record_run_pages(MAX_VALUE_LEN as u64 + MAX_KEY_LEN as u64 + 64) <= MAX_FREED_RUN_PAGES
        );
    }
}
