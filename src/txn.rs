//! Snapshots, read and write transactions, and the commit protocol.
//!
//! Commit (DESIGN.md §4): the transaction's records and the allocator blob are written to space
//! no snapshot can reach; a durable two-phase commit syncs them; the meta slot holding neither
//! the last durable nor the latest commit is overwritten (one atomic write); a durable commit
//! syncs (once more, or for the only time when one-phase) and becomes the last durable commit.
//! Readers pick the newest meta slot they can trust (I1), so they see either the old or the new
//! commit, never a mix, and never one older than the latest acknowledged.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{ArcMutexGuard, Mutex, RawMutex};
use zerocopy::{FromBytes, IntoBytes};

use crate::alloc::{AllocSummary, Allocator, Evacuation, Pager};
use crate::error::{Error, Result, corrupt};
use crate::format::*;
use crate::storage::registry::{LivePin, Pin, Registry, fork_generation};
use crate::storage::{Storage, View};
use crate::trie::{Iter as TrieIter, KeyHasher, Reader, TrieWriter, VERIFY_ON_READ_MAX};

/// When a commit is safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// `commit` returns once the commit survives power loss (two syncs).
    #[default]
    Immediate,
    /// `commit` returns once the commit is visible to every reader and survives a crash of the
    /// process, but not of the machine: after a power loss or reboot the heap opens at the last
    /// durable commit. [`crate::Heap::checkpoint`] makes it durable.
    None,
}

/// One commit as its meta slot describes it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Snapshot {
    pub txn: TxnId,
    pub root: u64,
    pub entries: u64,
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
        root: m.root.get(),
        entries: m.entries.get(),
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
    if best.root != 0 && (best.root < DATA_START || best.root >= a.end || best.root % 8 != 0) {
        return Err(corrupt(META_OFFSETS[best.slot], "meta slot root out of range"));
    }
    // Every entry is a leaf of at least 16 bytes below `end`: this bounds every walk by the
    // file's size (I9).
    if best.entries > (a.end - DATA_START) / LEAF_HEADER_SIZE {
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
    m.root = s.root.into();
    m.entries = s.entries.into();
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

/// State shared by every handle of one open heap.
pub(crate) struct Shared {
    pub storage: Arc<dyn Storage>,
    pub hasher: KeyHasher,
    pub read_only: bool,
    pub durability: Durability,
    pub boot: [u8; 16],
    /// Pins of live read transactions in every process, and the writer lock of all of them.
    pub registry: Registry,
    /// Serialises this handle's threads before one of them takes the registry's writer lock.
    pub writer: Arc<Mutex<WriterState>>,
    /// [`fork_generation`] when the handle was opened: in a forked child it differs.
    pub fork_gen: u64,
    pub poisoned: AtomicBool,
    /// Results of verifying one-phase slots of an earlier boot: (slot, txn, intact).
    pub verified: Mutex<Vec<(usize, TxnId, bool)>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").field("storage", &self.storage).finish_non_exhaustive()
    }
}

/// The writer's state, kept between write transactions.
#[derive(Debug, Default)]
pub(crate) struct WriterState {
    /// Allocator as of commit `loaded`; `None` after an abort or before the first write.
    pub alloc: Option<Allocator>,
    pub loaded: TxnId,
    pub durable_txn: TxnId,
    /// Slot of the last durable commit: not overwritten until the next durable commit (I2).
    pub durable_slot: usize,
    /// Slot of the latest commit: not overwritten while it is the latest (readers use it).
    pub latest_slot: usize,
    /// Largest transaction id in any slot when the allocator was loaded, trusted or not: new
    /// commits take ids above it, so a stale slot never shares an id with a new one.
    pub txn_floor: TxnId,
}

impl Drop for Shared {
    /// The last handle closes: give back the growth slack past the end of every meta slot
    /// (after a power loss an older slot may be the one that opens, so its end must stay).
    /// Only under the writer lock, so no other process is growing the file (I12), only by the
    /// handle that wrote last, and only when its last commit is the latest and durable: then
    /// everything the file's slots refer to was synced, so the truncation needs no sync of its
    /// own (S3, DESIGN §4.6). Otherwise the slack stays for the next durable commit to give back.
    fn drop(&mut self) {
        if self.read_only || self.forked() || self.poisoned.load(Ordering::Acquire) {
            return;
        }
        let ours = match self.registry.lock_writer(false) {
            Ok(Some(ours)) => ours,
            _ => return,
        };
        let state = self.writer.lock();
        // `durable_txn <= loaded <= latest`: a durable last commit that is the latest was loaded.
        if ours && state.alloc.is_some() && state.durable_txn == self.latest_txn() {
            let floor = (|| {
                let pins = self.registry.live_pins(true).ok()?;
                let anonymous = self.registry.anonymous_present().ok()?;
                self.shrink_floor(&pins, anonymous).ok()?
            })();
            if let Some(floor) = floor
                && floor < self.storage.len()
            {
                let _ = self.storage.truncate(floor);
            }
        }
        drop(state);
        self.registry.unlock_writer();
    }
}

impl Shared {
    /// The newest valid slot's transaction (trusted or not; 0 if none).
    fn latest_txn(&self) -> TxnId {
        let view = self.storage.view();
        read_slots(&view, &self.boot).iter().map(|s| s.txn).max().unwrap_or(TxnId(0))
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.forked() {
            return Err(Error::Forked);
        }
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// The length below which the file must not be cut (I12): the largest `end` of the meta
    /// slots' commits and of the snapshots pinned by `pins` (a scan by the writer lock's holder;
    /// a reader pinning later pins the latest commit, whose slot is counted). `None` while an
    /// unregistered reader, whose snapshot is unknown, has a transaction open.
    pub(crate) fn shrink_floor(&self, pins: &[LivePin], anonymous: bool) -> Result<Option<u64>> {
        if anonymous {
            return Ok(None);
        }
        let view = self.storage.view();
        let slots = read_slots(&view, &self.boot).into_iter().map(|s| s.alloc.end);
        let ends = slots.chain(pins.iter().map(|p| p.end));
        Ok(Some(ends.max().unwrap_or(DATA_START).max(DATA_START)))
    }

    /// Is the kernel's boot id known? Without it, commits of this boot cannot be told from
    /// commits of an earlier one.
    pub(crate) fn boot_known(&self) -> bool {
        self.boot != [0; 16]
    }

    /// Is this a forked child's inherited copy of the handle?
    pub(crate) fn forked(&self) -> bool {
        fork_generation() != self.fork_gen
    }

    pub(crate) fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }

    /// The latest trusted commit and a view that covers it.
    pub(crate) fn latest(&self) -> Result<(Snapshot, Arc<View>)> {
        // The newest commit past the length this handle knows: another process grew the file
        // (or a commit newer than the one we saw grew it again after it was shortened). The
        // file is truncated only if the same newest commit still ends past its fresh length.
        let mut refreshed_for = None;
        loop {
            let mut view = self.storage.view();
            let len = self.storage.len();
            let snap = match choose(&view, len, &self.boot, &mut |s| self.verify(&view, s)) {
                Err(e @ Error::Truncated { .. }) => {
                    let newest = read_slots(&view, &self.boot).iter().map(|s| s.txn).max();
                    if refreshed_for == Some(newest) {
                        return Err(e);
                    }
                    self.storage.refresh()?;
                    refreshed_for = Some(newest);
                    continue;
                }
                r => r?,
            };
            if view.slice(0, snap.alloc.end, snap.alloc.end).is_none() {
                // A writer grew the file (new mapping) after we took the view.
                view = self.storage.view();
            }
            return Ok((snap, view));
        }
    }

    /// Commits newer than `chosen` that were passed over; `trusted` is [`Shared::trusted`].
    pub(crate) fn skipped(&self, chosen: &Snapshot, trusted: &[Snapshot]) -> Vec<SkippedCommit> {
        skipped(&self.storage.view(), &self.boot, chosen, trusted)
    }

    /// The trusted slots, newest first.
    pub(crate) fn trusted(&self) -> Result<Vec<Snapshot>> {
        let view = self.storage.view();
        trusted(&view, self.storage.len(), &self.boot, &mut |s| self.verify(&view, s))
    }

    /// Verify a one-phase slot of an earlier boot, once per slot and transaction.
    fn verify(&self, view: &View, s: &Snapshot) -> bool {
        let mut cache = self.verified.lock();
        if let Some(&(_, _, ok)) = cache.iter().find(|c| c.0 == s.slot && c.1 == s.txn) {
            return ok;
        }
        let ok = crate::alloc::verify_one_phase(view, &s.alloc);
        cache.retain(|c| c.0 != s.slot);
        cache.push((s.slot, s.txn, ok));
        ok
    }

    /// Snapshots pinned by live readers of every process, oldest first.
    pub(crate) fn live_pins(&self) -> Result<Vec<LivePin>> {
        self.registry.live_pins(false)
    }
}

// ---------------------------------------------------------------------------------------------
// Read transactions

#[cfg(test)]
thread_local! {
    /// Run once between a reader's choice of snapshot and its pin (tests widen the race).
    pub(crate) static BEFORE_PIN: std::cell::Cell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::Cell::new(None) };
}

/// A read-only snapshot of the heap: every read sees the commit that was latest when it began.
/// Never blocks and is never blocked by the writer. `Send + Sync`.
pub struct ReadTxn {
    shared: Arc<Shared>,
    view: Arc<View>,
    snap: Snapshot,
    pin: Pin,
}

impl fmt::Debug for ReadTxn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadTxn").field("txn", &self.snap.txn.0).finish()
    }
}

impl ReadTxn {
    /// Pin the latest commit (I4): publish it, fence, and check that it is still the latest;
    /// a writer either sees the pin or has published a newer commit that the check sees.
    pub(crate) fn begin(shared: &Arc<Shared>) -> Result<ReadTxn> {
        shared.check()?;
        let pin = shared.registry.enter()?;
        let pinned = (|| loop {
            let (snap, view) = shared.latest()?;
            #[cfg(test)]
            BEFORE_PIN.with(|hook| hook.take().map(|f| f()));
            shared.registry.pin(pin, snap.txn, snap.alloc.end);
            if shared.latest()?.0.txn == snap.txn {
                return Ok((snap, view));
            }
        })();
        match pinned {
            Ok((snap, view)) => Ok(ReadTxn { shared: shared.clone(), view, snap, pin }),
            Err(e) => {
                shared.registry.leave(pin);
                Err(e)
            }
        }
    }

    fn reader(&self) -> Reader<'_> {
        Reader { view: &self.view, limit: self.snap.alloc.end }
    }

    pub(crate) fn snapshot(&self) -> &Snapshot {
        &self.snap
    }

    /// The value of `key`, borrowed from the mapped file. A value of up to 16 KiB is checked
    /// against its record's checksum first (DESIGN §2.6): damage is [`Error::Corrupt`], never
    /// wrong bytes. Longer values are not hashed on every read; [`ReadTxn::get_verified`] does.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        self.shared.check()?;
        self.reader().get(self.snap.root, self.shared.hasher.hash(key), key, VERIFY_ON_READ_MAX)
    }

    /// As [`ReadTxn::get`], with the record's checksum checked whatever the value's length (one
    /// pass over it).
    pub fn get_verified(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        self.shared.check()?;
        self.reader().get(self.snap.root, self.shared.hasher.hash(key), key, usize::MAX)
    }

    /// Is `key` present?
    pub fn contains_key(&self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.snap.entries
    }

    pub fn is_empty(&self) -> bool {
        self.snap.entries == 0
    }

    /// The snapshot's transaction id.
    pub fn txn_id(&self) -> u64 {
        self.snap.txn.0
    }

    /// Every entry, in hash order.
    pub fn iter(&self) -> Iter<'_> {
        Iter(TrieIter::new(self.reader(), self.snap.root, self.snap.entries))
    }
}

impl Drop for ReadTxn {
    fn drop(&mut self) {
        // A forked child's copy must leave the parent's pin alone.
        if !self.shared.forked() {
            self.shared.registry.leave(self.pin);
        }
    }
}

/// Iterator over `(key, value)` pairs; items are `Result`s because a damaged file is detected
/// as the walk goes.
#[derive(Debug)]
pub struct Iter<'a>(TrieIter<'a>);

impl<'a> Iterator for Iter<'a> {
    type Item = Result<(&'a [u8], &'a [u8])>;
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
}

// ---------------------------------------------------------------------------------------------
// Write transactions

/// The one write transaction of a heap. Sees its own writes; nothing is visible to others until
/// [`WriteTxn::commit`]; dropping it (or [`WriteTxn::abort`]) discards everything. `Send`.
pub struct WriteTxn {
    shared: Arc<Shared>,
    guard: ArcMutexGuard<RawMutex, WriterState>,
    /// Holds the registry's writer lock (released in `drop`, before `guard`).
    locked: bool,
    /// Live pins when the transaction began, oldest first.
    pins: Vec<LivePin>,
    /// Give back all the file's slack at commit, not only a large one (compaction's last step).
    pub(crate) shrink_fully: bool,
    /// An unregistered reader had a transaction open when this one began: nothing is cut at
    /// commit. (One arriving later reads the base or this commit, whose slots bound the cut.)
    anonymous: bool,
    base: Snapshot,
    root: u64,
    entries: u64,
    durability: Durability,
    /// A mutation failed half-way: the transaction can only be dropped.
    failed: bool,
    done: bool,
}

impl fmt::Debug for WriteTxn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteTxn").field("base", &self.base.txn.0).finish_non_exhaustive()
    }
}

impl WriteTxn {
    pub(crate) fn begin(shared: &Arc<Shared>, wait: bool) -> Result<WriteTxn> {
        shared.check()?;
        if shared.read_only {
            return Err(Error::ReadOnly);
        }
        let guard = if wait {
            shared.writer.lock_arc()
        } else {
            shared.writer.try_lock_arc().ok_or(Error::WriteInProgress)?
        };
        let Some(length_known) = shared.registry.lock_writer(wait)? else {
            return Err(Error::WriteInProgress);
        };
        let mut tx = WriteTxn {
            shared: shared.clone(),
            guard,
            locked: true,
            pins: Vec::new(),
            shrink_fully: false,
            anonymous: false,
            base: Snapshot::default(),
            root: 0,
            entries: 0,
            durability: shared.durability,
            failed: false,
            done: false,
        };
        // Another process or handle may have grown the file, or trimmed its slack at close,
        // unless this handle held the writer lock last.
        if !length_known {
            shared.storage.refresh()?;
        }
        let (snap, _) = shared.latest()?;
        let reload = tx.guard.alloc.is_none() || tx.guard.loaded != snap.txn;
        // S2 (DESIGN §4.6): another handle held the writer lock since this one did, or the
        // allocator must be read anew: settle what the page cache holds before building on it.
        if reload || !length_known {
            tx.settle()?;
        }
        if reload {
            tx.load(&snap)?;
        }
        let durable = tx.guard.durable_txn;
        // The reuse horizon (I4): after the latest commit's meta store (ours or, before the
        // writer lock passed to us, another process's) and a fence, scan the pins. A reader
        // that pins after the scan re-checks and holds `snap` or newer.
        let pins = shared.registry.live_pins(true)?;
        if let Some(p) = pins.iter().find(|p| p.txn > snap.txn) {
            // A reader holds a commit newer than every valid slot: one a failed sync made the
            // heap forget (I13). Its records lie in space the latest commit counts as free, so
            // nothing may be written until it ends.
            return Err(Error::Io(std::io::Error::other(format!(
                "a read transaction still holds commit {}, which a failed sync discarded; retry once it ends",
                p.txn.0
            ))));
        }
        let mut readers = pins.first().map_or(TxnId(u64::MAX), |p| p.txn);
        if let Some(t) = shared.registry.anonymous_horizon(snap.txn)? {
            readers = readers.min(t);
            tx.anonymous = true;
        }
        tx.pins = pins;
        let res = tx.alloc().begin_txn(readers, readers.min(durable));
        if let Err(e) = res {
            tx.guard.alloc = None;
            return Err(e);
        }
        tx.base = snap;
        tx.root = snap.root;
        tx.entries = snap.entries;
        Ok(tx)
    }

    /// Load the allocator of commit `snap` and learn which slot holds the last durable commit.
    /// The caller has settled the file (S2).
    fn load(&mut self, snap: &Snapshot) -> Result<()> {
        self.guard.alloc = None;
        let storage = self.shared.storage.clone();
        let alloc = Allocator::load(Pager::new(storage), &snap.alloc)?;
        // The newest durable-flagged slot not newer than the latest is what a power loss would
        // leave (newer ones failed verification).
        let durable = self.shared.trusted()?.into_iter().find(|s| s.durable && s.txn <= snap.txn);
        let stale = read_slots(&self.shared.storage.view(), &self.shared.boot);
        let g = &mut *self.guard;
        g.txn_floor = stale.iter().map(|s| s.txn).max().unwrap_or(snap.txn);
        g.alloc = Some(alloc);
        g.loaded = snap.txn;
        g.latest_slot = snap.slot;
        (g.durable_txn, g.durable_slot) =
            durable.map_or((TxnId(0), snap.slot), |d| (d.txn, d.slot));
        Ok(())
    }

    /// Settle (S2): make durable everything the page cache holds — commits of processes that
    /// died before their sync, and the invalidations a failed sync wrote (S1) — before this
    /// writer writes a byte that an invalidated commit's records may occupy. If the sync fails,
    /// the pages of earlier processes may be lost too: keep only the slots a reboot would trust
    /// and poison the handle.
    fn settle(&mut self) -> Result<()> {
        self.shared.storage.sync().inspect_err(|_| {
            self.guard.alloc = None;
            self.shared.poison();
            self.forget_unsettled();
        })
    }

    /// After a failed settling sync: pages of earlier processes may be lost, so keep only the
    /// slots a reboot would trust (durable, and verified if one-phase); invalidate the other
    /// slots of this boot (I13). A two-phase durable slot's data was synced before it was written.
    fn forget_unsettled(&self) {
        let view = self.shared.storage.view();
        for s in read_slots(&view, &self.shared.boot) {
            let kept = !s.same_boot
                || (s.durable
                    && (!s.alloc.one_phase || crate::alloc::verify_one_phase(&view, &s.alloc)));
            if !kept {
                let _ = self.shared.storage.write_meta(META_OFFSETS[s.slot], &[0; META_SIZE]);
            }
        }
    }

    /// A sync of this commit: a failure also forgets what was not known synced (I13).
    fn sync_commit(&self) -> Result<()> {
        self.shared.storage.sync().inspect_err(|_| {
            self.shared.poison();
            self.forget_unsynced();
        })
    }

    /// After a failed sync: the kernel may have dropped the unsynced pages while keeping them
    /// readable (Linux marks them clean), so a later process would trust commits whose data never
    /// reaches the disk, and build durable commits on them. Invalidate, in the page cache, every
    /// meta slot newer than the last commit known synced: every later opener starts from it
    /// (I13). Best effort: if these writes fail too, nothing more can be done.
    fn forget_unsynced(&self) {
        let view = self.shared.storage.view();
        for s in read_slots(&view, &self.shared.boot) {
            if s.txn > self.guard.durable_txn {
                let _ = self.shared.storage.write_meta(META_OFFSETS[s.slot], &[0; META_SIZE]);
            }
        }
    }

    fn alloc(&mut self) -> &mut Allocator {
        self.guard.alloc.as_mut().expect("allocator loaded for the transaction")
    }

    fn usable(&self) -> Result<()> {
        self.shared.check()?;
        if self.failed {
            return Err(Error::TxnFailed);
        }
        Ok(())
    }

    fn reader(&self) -> Reader<'_> {
        let a = self.guard.alloc.as_ref().expect("allocator loaded");
        Reader { view: a.view(), limit: a.end() }
    }

    /// Mark the transaction failed after an error; a failed write also poisons the heap.
    fn fail<T>(&mut self, e: Error) -> Result<T> {
        self.failed = true;
        if matches!(e, Error::Io(_)) && self.guard.alloc.as_ref().is_some_and(|a| a.write_failed()) {
            self.shared.poison();
        }
        Err(e)
    }

    /// Insert or replace `key`.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.usable()?;
        let hasher = self.shared.hasher;
        let root = self.root;
        let res = TrieWriter { alloc: self.alloc(), hasher }.insert(root, key, value);
        match res {
            Ok((root, existed)) => {
                self.root = root;
                if !existed {
                    self.entries += 1;
                }
                Ok(())
            }
            Err(e @ (Error::KeyTooLarge { .. } | Error::ValueTooLarge { .. })) => Err(e),
            Err(e) => self.fail(e),
        }
    }

    /// Remove `key`; returns whether it was present.
    pub fn remove(&mut self, key: &[u8]) -> Result<bool> {
        self.usable()?;
        let hasher = self.shared.hasher;
        let root = self.root;
        let res = TrieWriter { alloc: self.alloc(), hasher }.remove(root, key);
        match res {
            Ok((root, existed)) => {
                self.root = root;
                if existed {
                    self.entries -= 1;
                }
                Ok(existed)
            }
            Err(e) => self.fail(e),
        }
    }

    /// The value of `key` as this transaction sees it.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        self.usable()?;
        self.reader().get(self.root, self.shared.hasher.hash(key), key, VERIFY_ON_READ_MAX)
    }

    pub fn contains_key(&self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    pub fn len(&self) -> u64 {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Every entry as this transaction sees it, in hash order.
    pub fn iter(&self) -> Iter<'_> {
        Iter(TrieIter::new(self.reader(), self.root, self.entries))
    }

    /// Override the heap's default durability for this commit.
    pub fn set_durability(&mut self, durability: Durability) {
        self.durability = durability;
    }

    /// Discard every change.
    pub fn abort(mut self) {
        self.rollback();
    }

    fn rollback(&mut self) {
        if !self.done {
            self.done = true;
            self.guard.alloc = None;
        }
    }

    /// Make the changes visible (and, with [`Durability::Immediate`], durable).
    pub fn commit(mut self) -> Result<()> {
        self.usable()?;
        let res = self.commit_inner();
        if res.is_err() {
            // Whatever was written is unreachable from any meta slot; reload on next begin.
            self.guard.alloc = None;
        }
        self.done = true;
        res
    }

    fn commit_inner(&mut self) -> Result<()> {
        let txn = TxnId(self.txn_id());
        // Where the boot id is unknown a non-durable commit could not be told from one of an
        // earlier boot (it would not be trusted, even by its own handle): every commit is durable.
        let durable = self.durability == Durability::Immediate || !self.shared.boot_known();
        let durable_txn = self.guard.durable_txn;
        // A reader that pinned after the scan holds the base or newer: merging a batch into
        // this commit's only delays its reuse, so the scan's pins suffice.
        let pins: Vec<TxnId> = self.pins.iter().map(|p| p.txn).collect();
        let no_reader_since = move |t: TxnId| !pins.iter().any(|&p| t <= p && p < txn);
        // One sync suffices only on top of a durable commit: otherwise earlier non-durable
        // data, which the extents do not list, could be missing after a power loss.
        let one_phase_ok = durable && durable_txn == self.base.txn;
        let summary = match self.alloc().persist(txn, durable_txn, one_phase_ok, &no_reader_since) {
            Ok(s) => s,
            Err(e) => return self.fail(e),
        };
        if durable && !summary.one_phase {
            self.sync_commit()?;
        }
        let snap = Snapshot {
            txn,
            root: self.root,
            entries: self.entries,
            slot: self.free_slot(),
            durable,
            same_boot: true,
            alloc: summary,
        };
        let meta = encode_meta(&snap, &self.shared.boot);
        self.shared
            .storage
            .write_meta(META_OFFSETS[snap.slot], &meta)
            .inspect_err(|_| self.shared.poison())?;
        self.guard.latest_slot = snap.slot;
        if durable {
            self.sync_commit()?;
            self.guard.durable_slot = snap.slot;
            self.guard.durable_txn = txn;
        }
        self.alloc().committed(durable);
        self.guard.loaded = txn;
        if durable {
            self.shrink();
        }
        Ok(())
    }

    /// Give back the file's tail when it holds nothing any commit or snapshot can reach and
    /// is long enough to be worth it (twice the growth step, so growth and shrinking do not
    /// alternate). Only right after a durable commit, whose sync covered every write the slots
    /// refer to (S3): the truncation needs no sync of its own, so no failure here can touch a
    /// commit that was acknowledged. Best effort: a failure here loses nothing.
    fn shrink(&mut self) {
        let len = self.shared.storage.len();
        let Ok(Some(floor)) = self.shared.shrink_floor(&self.pins, self.anonymous) else { return };
        let slack = if self.shrink_fully { 0 } else { (floor / 64).max(256 << 10) };
        let keep = (floor + slack).next_multiple_of(PAGE_SIZE);
        let worth = if self.shrink_fully { 0 } else { (4 << 20u64).max(len / 16) };
        if len > keep && len - keep >= worth {
            let _ = self.shared.storage.truncate(keep);
        }
    }

    /// Compaction: return empty spans to the free runs, order free slots lowest first, and
    /// with a `plan` limit choose the spans to empty.
    pub(crate) fn sweep(&mut self, plan: Option<u64>) -> Result<Evacuation> {
        self.usable()?;
        match self.alloc().sweep_and_plan(plan) {
            Ok(e) => Ok(e),
            Err(e) => self.fail(e),
        }
    }

    /// Compaction: one bounded step of a pass moving records downwards (see
    /// [`TrieWriter::lower_step`]); returns the bytes moved and where to resume.
    pub(crate) fn lower_step(
        &mut self,
        from: usize,
        plan: &Evacuation,
        budget: u64,
    ) -> Result<(u64, Option<usize>)> {
        self.usable()?;
        let (hasher, root, mut moved) = (self.shared.hasher, self.root, 0);
        let mut w = TrieWriter { alloc: self.alloc(), hasher };
        let res = w.lower_step(root, from, plan, budget, &mut moved);
        match res {
            Ok((root, next)) => {
                self.root = root;
                Ok((moved, next))
            }
            Err(e) => self.fail(e),
        }
    }

    /// The slot this commit writes: neither the last durable commit's nor the latest's (I2);
    /// of the others, the one holding the oldest commit (or none), so that every slot turns
    /// over and no stale slot keeps the file long (I12).
    fn free_slot(&self) -> usize {
        let view = self.shared.storage.view();
        let held = read_slots(&view, &self.shared.boot);
        let txn_of = |i: usize| held.iter().find(|s| s.slot == i).map_or(TxnId(0), |s| s.txn);
        (0..META_SLOTS)
            .filter(|&i| i != self.guard.durable_slot && i != self.guard.latest_slot)
            .min_by_key(|&i| txn_of(i))
            .expect("three slots")
    }

    /// The id the commit of this transaction will get.
    pub fn txn_id(&self) -> u64 {
        self.base.txn.max(self.guard.txn_floor).0 + 1
    }

    pub(crate) fn is_durable_base(&self) -> bool {
        self.guard.durable_txn == self.base.txn
    }
}

impl Drop for WriteTxn {
    fn drop(&mut self) {
        self.rollback();
        // In a forked child the lock is the parent's.
        if self.locked && !self.shared.forked() {
            self.shared.registry.unlock_writer();
        }
    }
}

/// For the integrity walk: the allocator of a pinned snapshot. Its blob, chunks and run headers
/// stay intact while the snapshot is pinned (I4, I5).
pub(crate) fn load_snapshot_alloc(shared: &Shared, snap: &Snapshot) -> Result<Allocator> {
    Allocator::load(Pager::new(shared.storage.clone()), &snap.alloc)
}
