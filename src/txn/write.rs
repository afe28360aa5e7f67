//! Write transactions: the writer lock, settling (S2), loading the allocator, the reuse horizon,
//! and the mutations. The commit itself is in `commit.rs`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{ArcMutexGuard, RawMutex};

use super::Durability;
use super::group;
#[cfg(doc)]
use super::{Readable, Writable};
use crate::alloc::{Allocator, Evacuation, Pager};
use crate::error::{Error, Result};
use crate::format::*;
use crate::meta::{Snapshot, read_slots};
use crate::shared::{Shared, WriterState};
use crate::storage::registry::LivePin;
use crate::trie::{MapRoot, Reader, TrieWriter};

/// The one write transaction of a heap. Sees its own writes; nothing is visible to others until
/// [`WriteTxn::commit`]; dropping it (or [`WriteTxn::abort`]) discards everything. `Send`.
///
/// Its reads are [`Readable`]'s (on `&WriteTxn`), its changes [`Writable`]'s.
///
/// ```
/// use pheap::prelude::*;
/// # let dir = tempfile::tempdir()?;
/// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
/// let mut tx = heap.begin_write()?;
/// tx.insert(b"a", b"1")?;
/// tx.insert(b"b", b"2")?;
/// assert!(tx.remove(b"a")?);
/// assert_eq!(tx.get(b"b")?, Some(&b"2"[..])); // its own writes
/// assert_eq!(heap.begin_read()?.get(b"b")?, None); // nobody else's yet
/// tx.commit()?;
/// assert_eq!(heap.begin_read()?.len()?, 1);
/// # Ok::<(), pheap::Error>(())
/// ```
pub struct WriteTxn {
    // Field order is drop order: the handle's writer mutex (`guard`) is released before the
    // transaction's reference to the shared state, which may be the last one: closing the heap
    // then takes that mutex (the close-time trim).
    pub(super) guard: ArcMutexGuard<RawMutex, WriterState>,
    pub(super) shared: Arc<Shared>,
    /// Holds the registry's writer lock (released in `drop`, before `guard`).
    pub(super) locked: bool,
    /// Live pins when the transaction began, oldest first.
    pub(super) pins: Vec<LivePin>,
    /// Give back all the file's slack at commit, not only a large one (compaction's last step).
    pub(crate) shrink_fully: bool,
    /// An unregistered reader had a transaction open when this one began: nothing is cut at
    /// commit. (One arriving later reads the base or this commit, whose slots bound the cut.)
    pub(super) anonymous: bool,
    pub(super) base: Snapshot,
    /// The map as this transaction has changed it.
    pub(super) map: MapRoot,
    pub(super) durability: Durability,
    /// A mutation failed half-way: the transaction can only be dropped.
    pub(super) failed: bool,
    pub(super) done: bool,
    /// The file's length once the transaction had begun (`u64::MAX` before): what it grew past
    /// that is given back if it ends without committing.
    pub(super) begun_len: u64,
}

impl fmt::Debug for WriteTxn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteTxn").field("base", &self.base.txn.0).finish_non_exhaustive()
    }
}

/// How long [`WriteTxn::begin`] waits for the writer lock.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// Not at all: [`Error::WriteInProgress`] at once.
    No,
    /// Until then: [`Error::WriteInProgress`] after.
    Until(Instant),
    /// As long as it takes.
    Forever,
}

impl WriteTxn {
    /// Begin: take the writer locks ([`WriteTxn::lock`]), find the base and settle the file
    /// ([`WriteTxn::settle_base`]), set the reuse horizon ([`WriteTxn::set_horizon`]).
    pub(crate) fn begin(shared: &Arc<Shared>, wait: Wait) -> Result<WriteTxn> {
        let (guard, length_known, left_settled) = Self::lock(shared, wait)?;
        WRITERS.lock().push((heap_id(shared), std::thread::current().id()));
        let mut tx = WriteTxn {
            guard,
            shared: shared.clone(),
            locked: true,
            pins: Vec::new(),
            shrink_fully: false,
            anonymous: false,
            base: Snapshot::default(),
            map: MapRoot::EMPTY,
            durability: shared.durability,
            failed: false,
            done: false,
            // Nothing to give back until the transaction has begun (below).
            begun_len: u64::MAX,
        };
        let (snap, latest, staged, settled) = tx.settle_base(length_known, left_settled)?;
        tx.set_horizon(snap, latest, staged, settled)?;
        tx.map = snap.map;
        tx.begun_len = shared.storage.len();
        Ok(tx)
    }

    /// Step 1: the handle's writer mutex, then the registry's writer lock (unless this handle
    /// holds it still: a staged commit, a sync in flight; then no other handle can have changed
    /// the file since). Returns the mutex guard, whether the file's length is known (this
    /// handle held the lock last), and the commit the last holder left settled.
    #[allow(clippy::type_complexity)]
    fn lock(
        shared: &Arc<Shared>,
        wait: Wait,
    ) -> Result<(ArcMutexGuard<RawMutex, WriterState>, bool, Option<TxnId>)> {
        shared.check()?;
        if shared.sealed {
            return Err(Error::Sealed { path: shared.path.clone() });
        }
        if shared.read_only {
            return Err(Error::ReadOnly);
        }
        let (heap, me) = (heap_id(shared), std::thread::current().id());
        if !matches!(wait, Wait::No) && WRITERS.lock().iter().any(|&(h, t)| h == heap && t == me) {
            // Waiting would wait for ourselves (`try_begin_write` says WriteInProgress).
            return Err(Error::WriteOnThisThread);
        }
        let guard = match wait {
            Wait::Forever => Some(shared.writer.lock_arc()),
            Wait::No => shared.writer.try_lock_arc(),
            Wait::Until(deadline) => shared.writer.try_lock_arc_until(deadline),
        };
        let guard = guard.ok_or(Error::WriteInProgress)?;
        let held = {
            let mut g = shared.group.lock();
            if g.locked {
                g.writing = true;
                g.clean = None;
            }
            g.locked
        };
        if held {
            return Ok((guard, true, None));
        }
        let known = match wait {
            Wait::Forever => shared.registry.lock_writer(true)?,
            Wait::No => shared.registry.lock_writer(false)?,
            // The kernel's lock has no timed wait: poll, backing off to 10 ms.
            Wait::Until(deadline) => {
                let mut pause = Duration::from_micros(200);
                loop {
                    if let Some(known) = shared.registry.lock_writer(false)? {
                        break Some(known);
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        break None;
                    }
                    std::thread::sleep(pause.min(deadline - now));
                    pause = (pause * 2).min(Duration::from_millis(10));
                }
            }
        };
        let known = known.ok_or(Error::WriteInProgress)?;
        let mut g = shared.group.lock();
        g.locked = true;
        g.writing = true;
        g.clean = None;
        Ok((guard, known, shared.registry.take_settled()))
    }

    /// Step 2: the commit to build on, the file settled (S2) and the allocator loaded where
    /// needed. Returns the base, the latest commit, whether the base is a staged commit, and
    /// whether the file was settled (or must be treated as such).
    fn settle_base(
        &mut self,
        length_known: bool,
        left_settled: Option<TxnId>,
    ) -> Result<(Snapshot, Snapshot, bool, bool)> {
        let shared = self.shared.clone();
        // Another process or handle may have grown the file, or trimmed its slack at close,
        // unless this handle held the writer lock last.
        if !length_known {
            shared.storage.refresh()?;
        }
        // The base is the staged commit if there is one (DESIGN §4.3), which contains the
        // latest commit readers can see. (A syncer may write its slot at any time: then it is
        // the latest.) Nothing new can be staged meanwhile: this transaction holds the mutex.
        let mut staged = shared.group.lock().staged;
        let (mut latest, _) = shared.latest()?;
        let reload = |snap: &Snapshot, w: &WriterState| w.alloc.is_none() || w.loaded != snap.txn;
        if reload(&staged.unwrap_or(latest), &self.guard) {
            // The allocator is read anew (the first transaction, or one after a failure): first
            // the group's syncs end, so that which slots hold what stands still while it loads.
            group::wait_group_idle(&shared)?;
            staged = None;
            latest = shared.latest()?.0;
        }
        let snap = staged.unwrap_or(latest);
        let reload = reload(&snap, &self.guard);
        // S2 (DESIGN §4.6): another handle held the writer lock since this one did, or the
        // allocator must be read anew: settle what the page cache holds before building on it.
        // Unless the last holder left the latest commit settled (§5.5): then it is all synced.
        let settled = reload || !length_known;
        if settled && left_settled != Some(latest.txn) {
            self.settle()?;
        }
        if reload {
            self.load(&snap, latest.slot)?;
        }
        Ok((snap, latest, staged.is_some(), settled))
    }

    /// Step 3: the reuse horizon (I4), the slack given back, the allocator's transaction begun.
    fn set_horizon(
        &mut self,
        snap: Snapshot,
        latest: Snapshot,
        staged: bool,
        settled: bool,
    ) -> Result<()> {
        let shared = self.shared.clone();
        let durable = shared.group.lock().durable.0;
        // The reuse horizon (I4): after the latest commit's meta store (ours or, before the
        // writer lock passed to us, another process's) and a fence, scan the pins. A reader
        // that pins after the scan re-checks and holds `latest` or newer.
        let pins = shared.registry.live_pins(true)?;
        if let Some(p) = pins.iter().find(|p| p.txn > snap.txn) {
            // A reader holds a commit newer than every valid slot: one a failed sync made the
            // heap forget (I13). Its records lie in space the latest commit counts as free, so
            // nothing may be written until it ends. (The staged commit, whose slot a syncer may
            // have written since `latest` was read, is no such commit.)
            return Err(Error::DiscardedCommitPinned { txn_id: p.txn.0 });
        }
        let mut readers = pins.first().map_or(latest.txn, |p| p.txn.min(latest.txn));
        if let Some(t) = shared.registry.anonymous_horizon(latest.txn)? {
            readers = readers.min(t);
            self.anonymous = true;
        }
        self.pins = pins;
        // A group commit's syncer gives nothing back (it holds no lock after its sync): the
        // next transaction on that durable commit does (S3).
        if !staged
            && durable == latest.txn
            && shared.storage.len().saturating_sub(latest.alloc.end) >= SHRINK_WORTH
        {
            self.shrink();
        }
        self.base = snap;
        // Before `begin_txn`: releasing batches and sweeping write too.
        let txn = TxnId(self.txn_id());
        self.alloc().track(txn, snap.txn, durable, settled);
        let syncs = self.syncs();
        self.alloc().route_writes(syncs);
        let res = self.alloc().begin_txn(readers, readers.min(durable));
        if let Err(e) = res {
            self.guard.alloc = None;
            return Err(e);
        }
        Ok(())
    }

    /// Load the allocator of commit `snap` and learn which slot holds the last durable commit.
    /// The caller has settled the file (S2).
    fn load(&mut self, snap: &Snapshot, latest_slot: usize) -> Result<()> {
        self.guard.alloc = None;
        let storage = self.shared.storage.clone();
        let alloc = Allocator::load(Pager::new(storage), &snap.alloc)?;
        // The newest durable-flagged slot not newer than the latest is what a power loss would
        // leave (newer ones failed verification).
        let durable = self.shared.trusted()?.into_iter().find(|s| s.durable && s.txn <= snap.txn);
        let stale = read_slots(&self.shared.storage.view(), &self.shared.boot);
        let w = &mut *self.guard;
        w.txn_floor = stale.iter().map(|s| s.txn).max().unwrap_or(snap.txn);
        w.alloc = Some(alloc);
        w.loaded = snap.txn;
        // Nothing is staged or syncing (the caller waited for the group): the slots stand still.
        let mut g = self.shared.group.lock();
        debug_assert!(g.staged.is_none() && !g.syncing);
        g.latest_slot = latest_slot;
        g.durable = durable.map_or((TxnId(0), latest_slot), |d| (d.txn, d.slot));
        Ok(())
    }

    /// Settle (S2): make durable everything the page cache holds — commits of processes that
    /// died before their sync, and the invalidations a failed sync wrote (S1) — before this
    /// writer writes a byte that an invalidated commit's records may occupy. If the sync fails,
    /// the pages of earlier processes may be lost too: keep only the slots a reboot would trust
    /// and poison the handle.
    fn settle(&mut self) -> Result<()> {
        #[cfg(test)]
        self.shared.settles.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

    pub(super) fn alloc(&mut self) -> &mut Allocator {
        self.guard.alloc.as_mut().expect("allocator loaded for the transaction")
    }

    pub(super) fn usable(&self) -> Result<()> {
        self.shared.check()?;
        if self.failed {
            return Err(Error::TxnFailed);
        }
        Ok(())
    }

    pub(super) fn reader(&self) -> Reader<'_> {
        let a = self.guard.alloc.as_ref().expect("allocator loaded");
        Reader { view: a.view(), limit: a.end() }
    }

    /// Mark the transaction failed after an error; a failed write also poisons the heap.
    pub(super) fn fail<T>(&mut self, e: Error) -> Result<T> {
        self.failed = true;
        if matches!(e, Error::Io(_)) && self.guard.alloc.as_ref().is_some_and(|a| a.write_failed())
        {
            self.shared.poison();
        }
        Err(e)
    }

    /// Override the heap's default durability for this commit.
    pub fn set_durability(&mut self, durability: Durability) {
        self.durability = durability;
        let syncs = self.syncs();
        if let Some(a) = self.guard.alloc.as_mut() {
            a.route_writes(syncs);
        }
    }

    /// Will this transaction's commit sync? Where the boot id is unknown a non-durable commit
    /// could not be told from one of an earlier boot: every commit is durable. (A commit on
    /// top of a staged one is made durable too, which is known only when it commits.)
    pub(super) fn syncs(&self) -> bool {
        self.durability == Durability::Immediate || !self.shared.boot_known()
    }

    /// Discard every change (as dropping the transaction does).
    pub fn abort(mut self) {
        self.rollback();
    }

    /// End without committing: the changes are dropped, and the growth of the file they made
    /// is given back. No meta slot, pinned snapshot or staged commit ends past the length the
    /// transaction began with (they all existed then), so cutting back to it needs no sync
    /// (I12). Not in a forked child (the lock and the file are the parent's), nor after a
    /// failed write or sync (what the file holds is unknown).
    fn rollback(&mut self) {
        if !self.done {
            self.done = true;
            self.guard.alloc = None;
            if self.locked
                && self.shared.check().is_ok()
                && self.shared.storage.len() > self.begun_len
            {
                let _ = self.shared.storage.truncate(self.begun_len);
            }
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
        let (hasher, map, mut moved) = (self.shared.hasher, self.map, 0);
        let mut w = TrieWriter { alloc: self.alloc(), hasher };
        let res = w.lower_step(map, from, plan, budget, &mut moved);
        match res {
            Ok((map, next)) => {
                self.map = map;
                Ok((moved, next))
            }
            Err(e) => self.fail(e),
        }
    }

    /// The id the commit of this transaction will get.
    pub fn txn_id(&self) -> u64 {
        self.base.txn.max(self.guard.txn_floor).0 + 1
    }

    pub(crate) fn is_durable_base(&self) -> bool {
        self.shared.group.lock().durable.0 == self.base.txn
    }
}

impl Drop for WriteTxn {
    fn drop(&mut self) {
        self.rollback();
        // In a forked child the lock is the parent's.
        if self.locked && !self.shared.forked() {
            let heap = heap_id(&self.shared);
            WRITERS.lock().retain(|&(h, _)| h != heap);
            // The registry's writer lock goes unless a staged commit or a sync still needs it.
            let mut g = self.shared.group.lock();
            g.writing = false;
            g.release_if_idle(&self.shared);
        }
    }
}

/// Least tail worth giving back (see `WriteTxn::shrink`).
pub(super) const SHRINK_WORTH: u64 = 4 << 20;

/// The thread that began the write transaction of each heap file this process holds (files by
/// device and inode, so every handle of one file counts): a second `begin_write` on that thread
/// would wait for itself. (A transaction moved to another thread still counts for the thread
/// that began it.)
static WRITERS: parking_lot::Mutex<Vec<((u64, u64), std::thread::ThreadId)>> =
    parking_lot::Mutex::new(Vec::new());

fn heap_id(shared: &Arc<Shared>) -> (u64, u64) {
    match shared.storage.file_id() {
        Some(id) => (id.dev, id.ino),
        // A heap with no file (the simulated disk): the handle's own state.
        None => (u64::MAX, Arc::as_ptr(shared) as u64),
    }
}
