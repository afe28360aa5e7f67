//! The state every handle of one open heap shares: the storage, the registry, the writer's
//! state between transactions, poisoning and fork detection, and the close-time trim.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::alloc::{Allocator, Pager};
use crate::error::{Error, Result};
use crate::format::*;
use crate::meta::{SkippedCommit, Snapshot, choose, read_slots, skipped, trusted};
use crate::storage::fork::fork_generation;
use crate::storage::registry::{LivePin, Registry};
use crate::storage::{Storage, View};
use crate::trie::KeyHasher;
use crate::txn::ThreadReader;
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
    pub durability: Durability,
    pub boot: [u8; 16],
    /// Pins of live read transactions in every process, and the writer lock of all of them.
    pub registry: Registry,
    /// Serialises this handle's threads before one of them takes the registry's writer lock.
    pub writer: Arc<Mutex<WriterState>>,
    /// [`fork_generation`] when the handle was opened: in a forked child it differs.
    pub fork_gen: u64,
    pub poisoned: AtomicBool,
    /// The latest commit as last chosen, the view it was chosen with, and the meta-slot words
    /// ([`meta_signature`]) it was chosen from: while they are unchanged, no slot was written,
    /// so the choice stands (read transactions skip parsing and checksumming the slots).
    pub latest_cache: Mutex<Option<(MetaSignature, Snapshot, Arc<View>)>>,
    /// Results of verifying one-phase slots of an earlier boot: (slot, txn, intact).
    pub verified: Mutex<Vec<(usize, TxnId, bool)>>,
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
