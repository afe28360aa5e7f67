//! The state every handle of one open heap shares: the storage, the registry, the writer's
//! state between transactions, poisoning and fork detection, and the close-time trim.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::alloc::{Allocator, Pager};
use crate::error::{Error, Result};
use crate::format::*;
use crate::meta::{SkippedCommit, Snapshot, choose, read_slots, skipped, trusted};
use crate::storage::fork::fork_generation;
use crate::storage::registry::{LivePin, Registry};
use crate::storage::{Storage, View};
use crate::trie::KeyHasher;
use thread_local::ThreadLocal;

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

/// State shared by every handle of one open heap.
pub(crate) struct Shared {
    pub storage: Arc<dyn Storage>,
    /// The path the heap was opened at.
    pub path: std::path::PathBuf,
    /// The header's format version (of the build that created the file).
    pub format_version: u32,
    pub hasher: KeyHasher,
    pub read_only: bool,
    /// The file is sealed (DESIGN §2.1a): opened read-only and without a lock file.
    pub sealed: bool,
    /// A sealed file's digest, from its header.
    pub digest: Option<[u8; 16]>,
    pub durability: Durability,
    pub boot: [u8; 16],
    /// Pins of live read transactions in every process, and the writer lock of all of them.
    pub registry: Registry,
    /// Serialises this handle's threads before one of them takes the registry's writer lock.
    pub writer: Arc<Mutex<WriterState>>,
    /// The handle's group commit: its syncs, how far they reached, who holds the registry's
    /// writer lock for it (DESIGN §4.3). Taken after `writer`, never before.
    pub group: Group,
    /// [`fork_generation`] when the handle was opened: in a forked child it differs.
    pub fork_gen: u64,
    pub poisoned: AtomicBool,
    /// The latest commit as last chosen, the view it was chosen with, and the meta-slot words
    /// ([`meta_signature`]) it was chosen from: while they are unchanged, no slot was written,
    /// so the choice stands (read transactions skip parsing and checksumming the slots).
    pub latest_cache: Mutex<Option<(MetaSignature, Snapshot, Arc<View>)>>,
    /// Results of verifying one-phase slots of an earlier boot: (slot, txn, intact).
    pub verified: Mutex<Vec<(usize, TxnId, bool)>>,
    /// Settling syncs made (tests count them).
    #[cfg(test)]
    pub settles: std::sync::atomic::AtomicU64,
    /// Each thread's read-transaction context and spare reader slot: a read transaction begins
    /// and ends without writing memory another thread writes. Emptied of contexts when the last
    /// [`crate::Heap`] of the handle drops (each context owns this state).
    pub thread_readers: ThreadLocal<Mutex<ThreadReader>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").field("storage", &self.storage).finish_non_exhaustive()
    }
}

/// The writer's state, kept between write transactions. (Which slots hold what, and the staged
/// commit, are the group's: [`GroupState`]; a syncer writes them without this state's mutex.)
#[derive(Debug, Default)]
pub(crate) struct WriterState {
    /// Allocator as of commit `loaded`; `None` after an abort or before the first write.
    pub alloc: Option<Allocator>,
    pub loaded: TxnId,
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
        let durable = self.group.lock().durable.0;
        // `durable <= loaded <= latest`: a durable last commit that is the latest was loaded.
        if ours && state.alloc.is_some() && durable == self.latest_txn() {
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

    /// As [`Shared::latest`], answered from the cache while no meta slot has been written since
    /// (the common case of a read transaction): two atomic loads per slot instead of parsing
    /// and checksumming all three. A slot being written changes its transaction id (stored
    /// early) or its checksum (stored last), so a torn or new slot always misses the cache; a
    /// reader that meets the cache just before a commit's slot store sees the previous commit,
    /// as it would have by reading a moment earlier.
    /// Also returns the signature the choice stands for: while [`meta_signature`] still reads
    /// it, the choice is still the latest.
    pub(crate) fn latest_cached(&self) -> Result<(Snapshot, Arc<View>, MetaSignature)> {
        {
            let cache = self.latest_cache.lock();
            if let Some((sig, snap, view)) = &*cache
                && meta_signature(view) == *sig
            {
                return Ok((*snap, view.clone(), *sig));
            }
        }
        let sig = meta_signature(&self.storage.view());
        let (snap, view) = self.latest()?;
        *self.latest_cache.lock() = Some((sig, snap, view.clone()));
        Ok((snap, view, sig))
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

/// The transaction id and checksum words of every meta slot (atomic loads).
pub(crate) type MetaSignature = [u64; 2 * META_SLOTS];

pub(crate) fn meta_signature(view: &View) -> MetaSignature {
    let mut sig = [0; 2 * META_SLOTS];
    for (i, &at) in META_OFFSETS.iter().enumerate() {
        sig[2 * i] = view.read_meta_word(at + META_TXN_AT);
        sig[2 * i + 1] = view.read_meta_word(at + META_CHECKSUM_AT);
    }
    sig
}

/// For the integrity walk: the allocator of a pinned snapshot. Its blob, chunks and run headers
/// stay intact while the snapshot is pinned (I4, I5).
pub(crate) fn load_snapshot_alloc(shared: &Shared, snap: &Snapshot) -> Result<Allocator> {
    Allocator::load(Pager::new(shared.storage.clone()), &snap.alloc)
}

// ---------------------------------------------------------------------------------------------
// Group commit's shared state (the protocol is `txn::group`, DESIGN §4.3)

/// The state of a handle's group commit.
#[derive(Debug, Default)]
pub(crate) struct Group {
    state: Mutex<GroupState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
pub(crate) struct GroupState {
    /// A sync is in flight, by a syncer that holds neither mutex while it runs. No meta slot is
    /// written meanwhile (so none can overwrite the one it must find intact).
    pub syncing: bool,
    /// The newest commit known durable (made so by this handle's syncs, or found durable when
    /// the allocator was loaded) and its slot: not overwritten until a newer commit is durable
    /// (I2). Commits waiting on a sync return once this reaches them.
    pub durable: (TxnId, usize),
    /// The slot of the latest commit: not overwritten while it is the latest (readers use it).
    pub latest_slot: usize,
    /// A durable commit made while a sync was in flight, waiting for a syncer to write its meta
    /// slot (DESIGN §4.3); the next transaction builds on it. Its slot is written under this
    /// mutex alone, so a syncer never waits for a writer's open transaction.
    pub staged: Option<Snapshot>,
    /// A write transaction of this handle is open.
    pub writing: bool,
    /// This handle holds the registry's writer lock.
    pub locked: bool,
    /// A sync failed (its error): every commit that waited on it failed; the handle is poisoned.
    pub failed: Option<(io::ErrorKind, Option<i32>)>,
    /// Everything this handle wrote since it last began a transaction is synced, up to this
    /// commit: left in the lock file when the writer lock goes (`settled_txn`, DESIGN §5.5).
    pub clean: Option<TxnId>,
}

impl GroupState {
    /// Nothing of this handle needs the registry's writer lock any more.
    fn idle(&self) -> bool {
        self.locked && !self.writing && self.staged.is_none() && !self.syncing
    }

    /// Give the registry's writer lock back if nothing needs it.
    pub fn release_if_idle(&mut self, shared: &Shared) {
        if self.idle() {
            if let Some(txn) = self.clean {
                shared.registry.set_settled(txn);
            }
            shared.registry.unlock_writer();
            self.locked = false;
        }
    }

    /// The error every commit that waited on a failed sync gets.
    pub fn failure(&self) -> Option<Error> {
        self.failed.map(|(kind, os)| {
            Error::Io(match os {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(kind, "a sync shared with other commits failed"),
            })
        })
    }

    /// A sync (or the meta-slot write before it) failed with `e`.
    pub fn fail(&mut self, e: &Error) {
        let (kind, os) = match e {
            Error::Io(e) => (e.kind(), e.raw_os_error()),
            _ => (io::ErrorKind::Other, None),
        };
        self.failed = Some((kind, os));
        self.clean = None;
        self.syncing = false;
        // The handle is poisoned: the staged commit will never be written; let other
        // processes write.
        self.staged = None;
    }

    /// A sync that began after commit `txn`'s slot (`slot`) was written succeeded.
    pub fn synced(&mut self, txn: TxnId, slot: usize) {
        if self.durable.0 < txn {
            self.durable = (txn, slot);
        }
    }
}

impl Group {
    pub fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock()
    }

    /// Wait until no sync is in flight (the caller holds the writer mutex; syncers never take
    /// it). `Err` if a sync failed.
    pub fn wait_idle(&self) -> Result<MutexGuard<'_, GroupState>> {
        let mut g = self.state.lock();
        while g.syncing {
            self.changed.wait(&mut g);
        }
        match g.failure() {
            Some(e) => Err(e),
            None => Ok(g),
        }
    }

    /// Wait for the group's state to change (the caller holds `g`).
    pub fn wait(&self, g: &mut MutexGuard<'_, GroupState>) {
        self.changed.wait(g);
    }

    pub fn notify(&self) {
        self.changed.notify_all();
    }
}

// ---------------------------------------------------------------------------------------------
// Read contexts (used by `txn::read`, DESIGN §4.5)

/// What the read transactions one thread begins on one handle share while no meta slot is
/// written: the handle's state, the latest commit as this thread last chose it, the meta-slot
/// words it was chosen at, and a mapping that covers it. Each thread has its own
/// ([`Shared::thread_readers`]), so beginning and ending a read transaction writes only memory of
/// its own thread: this context's count, the thread's entry and its reader slot (DESIGN §4.5).
pub(crate) struct ReaderCtx {
    pub shared: Arc<Shared>,
    pub view: Arc<View>,
    pub snap: Snapshot,
    pub sig: MetaSignature,
}

/// A thread's entry in [`Shared::thread_readers`]: its context, and one idle reader slot it
/// keeps for its next read transaction. (The lock is only ever contended by a transaction ended
/// on another thread, or by the handle's close.)
#[derive(Default)]
pub(crate) struct ThreadReader {
    /// `None` once the handle's last [`crate::Heap`] is dropped: a context owns the shared state,
    /// which owns this entry, so the handle breaks that cycle when it closes.
    pub ctx: Option<Arc<ReaderCtx>>,
    pub spare: Option<u32>,
}
