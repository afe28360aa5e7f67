//! Meta slots: one commit each (DESIGN §2.2, §4.1). Encoding, parsing, and the choice of the
//! newest commit that can be trusted; the file header and the image of a new heap.

use std::path::Path;

use zerocopy::{FromBytes, IntoBytes};

use crate::alloc::AllocSummary;
use crate::error::{Error, Result, corrupt};
use crate::format::*;
use crate::storage::{Storage, View};
use crate::trie::MapRoot;

/// One commit as its meta slot describes it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Snapshot {
    pub txn: TxnId,
    /// The top-level map.
    pub map: MapRoot,
    pub slot: usize,
    pub durable: bool,
    pub same_boot: bool,
    pub alloc: AllocSummary,
}

fn parse_slot(bytes: &[u8; META_SIZE], slot: usize, boot: &[u8; 16]) -> Option<Snapshot> {
    let m = MetaSlot::read_from_bytes(bytes).ok()?;
    if m.magic != META_MAGIC || m.checksum.get() != m.compute_checksum() {
        return None;
    }
    Some(Snapshot {
        txn: TxnId(m.txn.get()),
        map: MapRoot { root: Offset(m.root.get()), entries: m.entries.get() },
        slot,
        durable: m.flags.get() & META_DURABLE != 0,
        same_boot: *boot != [0; 16] && m.boot_id == *boot,
        alloc: AllocSummary {
            end: m.end.get(),
            blob: m.alloc_blob.get(),
            blob_len: m.alloc_blob_len.get(),
            blob_checksum: m.alloc_blob_checksum.get(),
            live_bytes: m.live_bytes.get(),
            free_bytes: m.free_bytes.get(),
            one_phase: m.flags.get() & META_ONE_PHASE != 0,
            data_checksum: m.data_checksum.get(),
        },
    })
}

/// The newest commit that can be trusted (I1): a slot is trusted when its checksum holds and
/// either it was written since the last boot (so the page cache still holds everything it refers
/// to), or its data was synced before it was written (two-phase), or it was synced once after
/// and `verify` finds its blob and extents intact (one-phase).
pub(crate) fn choose(
    view: &View,
    file_len: u64,
    boot: &[u8; 16],
    verify: &mut dyn FnMut(&Snapshot) -> bool,
) -> Result<Snapshot> {
    let best = trusted(view, file_len, boot, verify)?
        .into_iter()
        .next()
        .ok_or_else(|| corrupt(META_OFFSETS[0], "no valid meta slot"))?;
    let a = &best.alloc;
    if a.end < DATA_START || a.end % PAGE_SIZE != 0 {
        return Err(corrupt(META_OFFSETS[best.slot], "meta slot end out of range"));
    }
    if a.end > file_len {
        return Err(Error::Truncated { len: file_len, needed: a.end });
    }
    let root = best.map.root.0;
    if root != 0 && (root < DATA_START || root >= a.end || !root.is_multiple_of(8)) {
        return Err(corrupt(META_OFFSETS[best.slot], "meta slot root out of range"));
    }
    // Every entry is a leaf of at least 16 bytes below `end`: this bounds every walk by the
    // file's size (I9).
    if best.map.entries > (a.end - DATA_START) / LEAF_HEADER_SIZE {
        return Err(corrupt(META_OFFSETS[best.slot], "meta slot entry count impossible"));
    }
    Ok(best)
}

/// The trusted slots (see [`choose`]), newest first.
pub(crate) fn trusted(
    view: &View,
    file_len: u64,
    boot: &[u8; 16],
    verify: &mut dyn FnMut(&Snapshot) -> bool,
) -> Result<Vec<Snapshot>> {
    let mut order = read_slots(view, boot);
    order.sort_by_key(|s| std::cmp::Reverse(s.txn));
    if let Some(w) = order.windows(2).find(|w| w[0].txn == w[1].txn) {
        return Err(corrupt(META_OFFSETS[w[1].slot], "two meta slots claim the same transaction"));
    }
    order.retain(|s| {
        // A one-phase slot past the end of the file lost its growth: incomplete.
        let mut intact = || s.alloc.end <= file_len && verify(s);
        s.same_boot || (s.durable && (!s.alloc.one_phase || intact()))
    });
    Ok(order)
}

/// A commit newer than the one the heap opened at that could not be used: a meta slot that is
/// damaged (a write torn by a crash, or damage to the file), or a commit that cannot be trusted
/// after a reboot (DESIGN §4.1). Reported by [`crate::Heap::stats`] and [`crate::Heap::check`],
/// so that a fallback to an older commit is never silent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SkippedCommit {
    /// Meta slot (0, 1 or 2).
    pub slot: u32,
    /// Transaction id the slot claims, when it can be read.
    pub txn_id: Option<u64>,
    /// Why it was not used.
    pub reason: &'static str,
}

/// The slots newer than `chosen` that were passed over (see [`SkippedCommit`]). Never-written
/// and invalidated slots (all zeros) are not listed.
pub(crate) fn skipped(
    view: &View,
    boot: &[u8; 16],
    chosen: &Snapshot,
    trusted: &[Snapshot],
) -> Vec<SkippedCommit> {
    let mut out = Vec::new();
    for (i, &at) in META_OFFSETS.iter().enumerate() {
        let bytes = view.read_meta(at);
        if bytes.iter().all(|&b| b == 0) {
            continue;
        }
        let m = MetaSlot::read_from_bytes(&bytes).expect("a meta slot's size");
        let claimed = (m.magic == META_MAGIC).then(|| m.txn.get());
        let (txn, reason) = match parse_slot(&bytes, i, boot) {
            None => (claimed, "damaged: its checksum fails (a write torn by a crash, or damage)"),
            Some(_) if trusted.iter().any(|t| t.slot == i) => continue,
            Some(s) if !s.durable => {
                (Some(s.txn.0), "not durable, and written before the last reboot or power loss")
            }
            Some(s) => {
                (Some(s.txn.0), "durable in one phase, but its data did not all reach the disk")
            }
        };
        if txn.is_none_or(|t| t > chosen.txn.0) {
            out.push(SkippedCommit { slot: i as u32, txn_id: txn, reason });
        }
    }
    out
}

/// Every meta slot whose checksum holds.
pub(crate) fn read_slots(view: &View, boot: &[u8; 16]) -> Vec<Snapshot> {
    (0..META_SLOTS).filter_map(|i| parse_slot(&view.read_meta(META_OFFSETS[i]), i, boot)).collect()
}

pub(crate) fn encode_meta(s: &Snapshot, boot: &[u8; 16]) -> [u8; META_SIZE] {
    let mut m = MetaSlot::new_zeroed();
    m.magic = META_MAGIC;
    m.txn = s.txn.0.into();
    m.root = s.map.root.0.into();
    m.entries = s.map.entries.into();
    m.end = s.alloc.end.into();
    m.alloc_blob = s.alloc.blob.into();
    m.alloc_blob_len = s.alloc.blob_len.into();
    m.alloc_blob_checksum = s.alloc.blob_checksum.into();
    m.live_bytes = s.alloc.live_bytes.into();
    m.free_bytes = s.alloc.free_bytes.into();
    let one_phase = if s.alloc.one_phase { META_ONE_PHASE } else { 0 };
    m.flags = (if s.durable { META_DURABLE | one_phase } else { 0 }).into();
    m.data_checksum = (if s.alloc.one_phase { s.alloc.data_checksum } else { 0 }).into();
    m.boot_id = *boot;
    m.checksum = m.compute_checksum().into();
    let mut out = [0u8; META_SIZE];
    out.copy_from_slice(m.as_bytes());
    out
}

/// The file's header, validated (DESIGN §2.1, checks in that order).
pub(crate) fn read_header(storage: &dyn Storage, path: &Path) -> Result<FileHeader> {
    let len = storage.len();
    let view = storage.view();
    let not_pheap = |reason| Error::NotAPheap { path: path.to_owned(), reason };
    if len == 0 {
        return Err(not_pheap("the file is empty"));
    }
    let head = view.slice(0, len.min(64), len).expect("inside the file");
    if head.len() < 8 {
        return Err(if MAGIC.starts_with(head) {
            Error::Truncated { len, needed: DATA_START }
        } else {
            not_pheap("wrong magic")
        });
    }
    if head[..8] != MAGIC {
        return Err(not_pheap("wrong magic"));
    }
    if len < 64 {
        return Err(Error::Truncated { len, needed: DATA_START });
    }
    let h = FileHeader::read_from_bytes(head).expect("64 bytes");
    if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&h.version.get()) {
        return Err(Error::UnsupportedVersion {
            found: h.version.get(),
            supported: FORMAT_VERSION,
        });
    }
    if h.checksum.get() != h.compute_checksum() {
        return Err(corrupt(0, "header checksum mismatch"));
    }
    if h.page_size.get() as u64 != PAGE_SIZE {
        return Err(corrupt(12, "unsupported page size"));
    }
    if h.flags.get() & !HEADER_FLAG_SEALED != 0 {
        return Err(corrupt(32, "unknown header flags"));
    }
    if !h.sealed() && h.digest != [0; 16] {
        return Err(corrupt(40, "a digest in the header of a heap that is not sealed"));
    }
    if len < DATA_START {
        return Err(Error::Truncated { len, needed: DATA_START });
    }
    Ok(h)
}

/// The sealed digest of the file behind `storage`, hashed in its mapping: each chunk asked for
/// (read ahead, its pages mapped in one call) before it is hashed, not faulted in page by page.
pub(crate) fn digest_of(storage: &dyn Storage) -> Result<[u8; 16]> {
    let (len, view) = (storage.len(), storage.view());
    Ok(crate::format::sealed_digest(len, |off, n| {
        storage.prefetch(off, n);
        view.slice(off, n, len).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank")
        })
    })?)
}

/// The bytes of a new, empty heap: the header, meta slot 0 (txn 0, durable, the empty map),
/// meta slots 1 and 2 zero (never written).
pub(crate) fn new_heap_image(boot: &[u8; 16]) -> Result<Vec<u8>> {
    let mut seed = [0u8; 16];
    getrandom::fill(&mut seed).map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
    Ok(new_heap_image_seeded(boot, seed))
}

/// As `new_heap_image`, with the key-hash seed given (tests need runs to repeat exactly).
pub(crate) fn new_heap_image_seeded(boot: &[u8; 16], seed: [u8; 16]) -> Vec<u8> {
    let mut h = FileHeader::read_from_bytes(&[0u8; 64][..]).expect("64 bytes");
    h.magic = MAGIC;
    h.version = FORMAT_VERSION.into();
    h.page_size = (PAGE_SIZE as u32).into();
    h.hash_seed = [
        u64::from_le_bytes(seed[..8].try_into().expect("8")).into(),
        u64::from_le_bytes(seed[8..].try_into().expect("8")).into(),
    ];
    h.checksum = h.compute_checksum().into();
    let mut img = vec![0u8; DATA_START as usize];
    img[..64].copy_from_slice(h.as_bytes());
    let snap = Snapshot {
        txn: TxnId(0),
        map: MapRoot::EMPTY,
        slot: 0,
        durable: true,
        same_boot: true,
        alloc: AllocSummary { end: DATA_START, ..AllocSummary::default() },
    };
    let meta = encode_meta(&snap, boot);
    let at = META_OFFSETS[0] as usize;
    img[at..at + META_SIZE].copy_from_slice(&meta);
    img
}
