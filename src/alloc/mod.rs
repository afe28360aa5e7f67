//! The arena allocator: variable-size records at 8-byte-aligned offsets.
//!
//! Records up to [`MAX_SLAB_SIZE`] live in slab spans of one size class; larger ones get a run of
//! pages each. Free space is persistent: each commit writes an allocator blob (spans being
//! carved, the top of each class's free stack, free runs, pending batches) and long free stacks
//! spill into immutable chunk pages. Only a writer ever loads it, lazily, so opening a heap and
//! reading never touch it.
//!
//! Ownership of space (DESIGN.md I3-I5): a record freed by commit T joins a pending batch tagged
//! T and is reused only once no snapshot older than T is pinned and, unless the record was
//! allocated after the last durable commit, T is durable. A record
//! allocated in the running transaction ("fresh") is invisible to everyone else, so it may be
//! rewritten in place and, when freed, reused at once.

mod blob;
mod chain;
mod inventory;
mod pager;
mod pending;
mod space;
mod sweep;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use zerocopy::FromBytes;

use crate::error::{Result, corrupt};
use crate::format::*;
use crate::storage::View;

pub(crate) use blob::{AllocSummary, verify_one_phase};

pub(crate) use pager::Pager;
pub(crate) use sweep::Evacuation;

#[derive(Default)]
pub(crate) struct OffsetHasher(u64);
impl Hasher for OffsetHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (v >> 3).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}
pub(crate) type OffsetSet = HashSet<u64, BuildHasherDefault<OffsetHasher>>;

#[derive(Debug, Clone, Default)]
struct ClassState {
    /// Top of the free stack (last = next to pop).
    top: Vec<u64>,
    /// Chain of chunk pages below `top`.
    below: u64,
    below_len: u64,
    /// Span being carved and its next never-used slot.
    span: u64,
    next_slot: u32,
}

impl ClassState {
    fn is_empty(&self) -> bool {
        self.top.is_empty() && self.below == 0 && self.span == 0
    }
}

/// Records freed by commit `txn` (or by several commits up to `txn`, merged), in the same
/// inline-top-plus-chain shape as a free stack.
#[derive(Debug, Clone)]
struct Pending {
    txn: TxnId,
    inline: Vec<u64>,
    chain: u64,
    chained: u64,
}

/// Whether the last commit's blob belongs to a staged commit that the running transaction's
/// commit replaces (claimed from the group, so no syncer writes its slot meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StagedBlob {
    /// No: the blob is (or may be) named by a meta slot.
    No,
    /// Claimed, its run not written: if the commit fails, the staged commit is still whole.
    Claimed,
    /// Claimed, and (part of) its run taken by this commit's own blob: if the commit fails
    /// now, the staged commit may be damaged.
    Reused,
}

/// The writer's view of space. Loaded from a commit's blob; mutated by one write transaction at
/// a time; discarded on abort (the next writer reloads from the last commit).
#[derive(Debug)]
pub(crate) struct Allocator {
    pager: Pager,
    end: u64,
    classes: Vec<ClassState>,
    runs: BTreeMap<u64, u64>,
    runs_by_size: BTreeSet<(u64, u64)>,
    /// Batches held back by readers and by the last durable commit, oldest first.
    pending: VecDeque<Pending>,
    /// Batches of records allocated after the last durable commit: only readers hold them.
    pending_ro: VecDeque<Pending>,
    /// The blob run of the last commit: (start, pages).
    blob: Option<(u64, u64)>,
    /// That commit is staged and the running transaction's commit replaces it (DESIGN §4.3):
    /// no slot will name its blob, which may be reused at once.
    staged_blob: StagedBlob,
    blob_len: u64,
    blob_checksum: u64,
    live_bytes: u64,
    free_bytes: u64,
    /// Per transaction: `end` when it began; everything at or above was allocated by it.
    floor: u64,
    /// Per transaction: objects allocated below `floor` (reused space).
    fresh: OffsetSet,
    /// Per transaction: records freed that an older snapshot or the durable commit may see.
    freed_now: Vec<u64>,
    /// Per transaction: records freed that only older snapshots may see.
    freed_now_ro: Vec<u64>,
    /// `end` at the last durable commit, or at load time if later. Everything at or above it
    /// was allocated after the last durable commit.
    durable_floor: u64,
    /// Records below `durable_floor` allocated after the last durable commit (in memory only:
    /// after a reload every pending record is treated as durability-bound, which is safe).
    since_durable: OffsetSet,
    /// Per transaction: anything changed (if not, the commit keeps the old blob).
    dirty: bool,
    /// Per transaction: the blob written lists its extents, checksummed so.
    one_phase: Option<u64>,
    /// Bytes made reusable (released) since the last sweep (in memory only; a reload starts
    /// at zero).
    freed_since_sweep: u64,
    /// The last commit was made without a sync of its own (in memory only; a reload starts
    /// at `false`): its durability-bound batch, if it is the newest, may take in the next
    /// commit's, since no sync makes the one durable without the other. A durable commit's
    /// batch takes in nothing: it becomes reusable when that commit's sync ends, while later
    /// commits are still in flight (group commit, DESIGN §4.3).
    merge_durable: bool,
}

impl Allocator {
    /// The allocator of an empty heap.
    pub(crate) fn empty(pager: Pager) -> Allocator {
        Allocator {
            pager,
            end: DATA_START,
            classes: vec![ClassState::default(); NUM_CLASSES],
            runs: BTreeMap::new(),
            runs_by_size: BTreeSet::new(),
            pending: VecDeque::new(),
            pending_ro: VecDeque::new(),
            blob: None,
            staged_blob: StagedBlob::No,
            blob_len: 0,
            blob_checksum: 0,
            live_bytes: 0,
            free_bytes: 0,
            floor: DATA_START,
            fresh: OffsetSet::default(),
            freed_now: Vec::new(),
            freed_now_ro: Vec::new(),
            durable_floor: u64::MAX,
            since_durable: OffsetSet::default(),
            dirty: false,
            one_phase: None,
            freed_since_sweep: 0,
            merge_durable: false,
        }
    }

    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// The view the allocator reads through (it covers `end`).
    pub(crate) fn view(&self) -> &View {
        self.pager.view()
    }

    /// Write `data` at `off`, inside a record this transaction allocated (or relocates).
    pub(crate) fn write(&mut self, off: Offset, data: &[u8]) -> Result<()> {
        self.pager.write(off, data)
    }

    /// Write `len` bytes at `off` that `fill` produces in place, inside a record this
    /// transaction allocated.
    pub(crate) fn write_with(
        &mut self,
        off: Offset,
        len: u64,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<()> {
        self.pager.write_with(off, len, fill)
    }

    /// Did a write fail? The handle must then be poisoned: what the file holds is unknown.
    pub(crate) fn write_failed(&self) -> bool {
        self.pager.failed
    }

    /// Bytes of `len` at `off`, below the current high-water mark.
    pub(crate) fn read(&self, off: Offset, len: u64) -> Result<&[u8]> {
        let bytes = self.pager.view().slice(off.0, len, self.end);
        bytes.ok_or_else(|| corrupt(off.0, "range past the end"))
    }

    fn check_record(&self, o: u64) -> Result<()> {
        if o < DATA_START || !o.is_multiple_of(8) || o >= self.end {
            return Err(corrupt(o, "free record offset out of range"));
        }
        Ok(())
    }

    fn check_page(&self, o: u64) -> Result<()> {
        if o < DATA_START || !o.is_multiple_of(PAGE_SIZE) || o >= self.end {
            return Err(corrupt(o, "page offset out of range"));
        }
        Ok(())
    }

    pub(crate) fn run_header(&self, start: u64) -> Result<RunHeader> {
        self.check_page(start)?;
        let h = RunHeader::read_from_bytes(self.read(Offset(start), RUN_HEADER_SIZE)?)
            .map_err(|_| corrupt(start, "run header"))?;
        if !h.is_valid()
            || h.pages.get() == 0
            || h.pages.get() as u64 > (self.end - start) / PAGE_SIZE
        {
            return Err(corrupt(start, "invalid run header"));
        }
        Ok(h)
    }

    // -----------------------------------------------------------------------------------------
    // Transactions

    /// Start a write transaction. Batches up to `readers` (the oldest pinned snapshot, or the
    /// latest commit) are released if reader-only; durability-bound ones up to `durable` (the
    /// older of that and the last durable commit).
    pub(crate) fn begin_txn(&mut self, readers: TxnId, durable: TxnId) -> Result<()> {
        self.staged_blob = StagedBlob::No;
        self.fresh.clear();
        self.freed_now.clear();
        self.freed_now_ro.clear();
        self.dirty = false;
        self.one_phase = None;
        self.floor = self.end;
        while self.pending.front().is_some_and(|p| p.txn <= durable) {
            let p = self.pending.pop_front().expect("checked");
            self.release(p)?;
        }
        while self.pending_ro.front().is_some_and(|p| p.txn <= readers) {
            let p = self.pending_ro.pop_front().expect("checked");
            self.release(p)?;
        }
        if self.sweep_due() {
            self.sweep()?;
        }
        // Space released above may have lowered `end`: bump allocations there are fresh too.
        self.floor = self.end;
        Ok(())
    }

    /// Route the running transaction's writes ([`Pager::route_writes`]).
    pub(crate) fn route_writes(&mut self, durable: bool) {
        self.pager.route_writes(durable);
    }

    /// Track the writes of transaction `txn` for a one-phase commit ([`Pager::track`]).
    pub(crate) fn track(&mut self, txn: TxnId, base: TxnId, synced: TxnId, all_synced: bool) {
        self.pager.track(txn, base, synced, all_synced);
    }

    /// Was `off` allocated by the running transaction?
    #[inline]
    pub(crate) fn is_fresh(&self, off: Offset) -> bool {
        off.0 >= self.floor || self.fresh.contains(&off.0)
    }

    /// Record that `off` was just allocated.
    fn note_fresh(&mut self, off: u64) {
        if off < self.floor {
            self.fresh.insert(off);
        }
        if off < self.durable_floor {
            self.since_durable.insert(off);
        }
    }

    /// Queue a record freed by this transaction: reader-only if allocated after the last
    /// durable commit (`at` is the address it was allocated under).
    fn defer(&mut self, f: Freed, at: u64) {
        if at >= self.durable_floor || self.since_durable.contains(&at) {
            self.freed_now_ro.push(f.pack());
        } else {
            self.freed_now.push(f.pack());
        }
    }

    /// The running transaction's commit replaces the staged commit whose blob is the last one
    /// (claimed from the group): its blob may be reused at once.
    pub(crate) fn claim_staged_blob(&mut self) {
        self.staged_blob = StagedBlob::Claimed;
    }

    /// Where the claim of [`Allocator::claim_staged_blob`] stands.
    pub(crate) fn staged_blob(&self) -> StagedBlob {
        self.staged_blob
    }

    /// The running transaction committed.
    pub(crate) fn committed(&mut self, durable: bool) {
        if durable {
            self.since_durable.clear();
            self.durable_floor = self.end;
        }
    }
}
