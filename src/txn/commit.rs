//! The commit protocol (DESIGN §4): write beside, sync, switch one meta slot, sync; and what a
//! failed sync leaves behind (S1, §4.6).

use std::sync::Arc;

#[cfg(doc)]
use super::Durability;
use super::group::{After, forget_unsynced, sync_as_syncer, wait_durable, write_slot};
use super::write::WriteTxn;
use crate::alloc::StagedBlob;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::format::*;
use crate::meta::Snapshot;
use crate::shared::Shared;

/// A durable commit made but not yet known durable (`WriteTxn::commit_pending`, in tests).
#[derive(Debug)]
#[must_use = "a pending commit is acknowledged only by `wait`"]
pub(crate) struct PendingCommit {
    shared: Arc<Shared>,
    after: After,
}

impl PendingCommit {
    /// Return once the commit is durable (or as [`WriteTxn::commit`] fails).
    pub(crate) fn wait(self) -> Result<()> {
        match self.after {
            After::Done => Ok(()),
            // Its own sync done, the committer returns: commits staged meanwhile are synced by
            // their own waiters (DESIGN §4.3).
            After::Sync { txn, slot } => sync_as_syncer(&self.shared, txn, slot),
            After::Wait(txn) => wait_durable(&self.shared, txn),
        }
    }
}

impl WriteTxn {
    /// A sync of this commit (two-phase, under the writer mutex): a failure also forgets what was
    /// not known synced (I13) and fails every commit waiting on the handle's syncs.
    fn sync_commit(&self) -> Result<()> {
        self.shared.storage.sync().inspect_err(|e| {
            self.shared.poison();
            let mut g = self.shared.group.lock();
            forget_unsynced(&self.shared, g.durable.0);
            g.fail(e);
            g.release_if_idle(&self.shared);
            self.shared.group.notify();
        })
    }

    /// Make the changes visible (and, with [`Durability::Immediate`], durable): when it returns
    /// `Ok`, every new read transaction of any process sees them, and they are never undone.
    ///
    /// Durable commits of several threads of one handle share syncs (group commit, DESIGN
    /// §4.3): while one sync is in flight the next commits are made and wait for the next sync,
    /// which covers them all.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when a write or a sync fails (also a sync shared with other commits): the
    /// commit did not happen as far as any later opener is concerned (a failed sync makes the
    /// heap forget every commit it could not prove synced, DESIGN §4.6), and the handle is
    /// poisoned; [`Error::TxnFailed`] after an earlier failure of the transaction.
    pub fn commit(self) -> Result<()> {
        self.commit_with(false)?.wait()
    }

    /// Commit, but when the commit is durable and one-phase, return before any sync: it is
    /// staged (DESIGN §4.3) and acknowledged by [`PendingCommit::wait`]. Tests use it to make
    /// group commits on one thread.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn commit_pending(self) -> Result<PendingCommit> {
        self.commit_with(true)
    }

    fn commit_with(mut self, stage: bool) -> Result<PendingCommit> {
        self.usable()?;
        let res = self.commit_inner(stage);
        if res.is_err() {
            // Whatever was written is unreachable from any meta slot; reload on next begin.
            self.guard.alloc = None;
        }
        self.done = true;
        let shared = self.shared.clone();
        // Lets the writer mutex go (and the registry's writer lock, unless a sync or a staged
        // commit still needs it).
        drop(self);
        Ok(PendingCommit { shared, after: res? })
    }

    fn commit_inner(&mut self, stage: bool) -> Result<After> {
        let txn = TxnId(self.txn_id());
        // Where the boot id is unknown a non-durable commit could not be told from one of an
        // earlier boot (it would not be trusted, even by its own handle): every commit is
        // durable. A commit on top of a staged one carries that one's waiters: durable too.
        // The staged commit, if a syncer has not taken it yet, is claimed: no syncer writes its
        // slot while this commit, which contains it, is made (its waiters wait for this one's
        // sync), so its blob may be reused at once (DESIGN §4.3).
        let (staged, durable_txn) = {
            let mut g = self.shared.group.lock();
            (g.staged.take(), g.durable.0)
        };
        if staged.is_some() {
            self.alloc().claim_staged_blob();
        }
        let durable = self.syncs() || staged.is_some();
        // A reader that pinned after the scan holds the base or newer: merging a batch into
        // this commit's only delays its reuse, so the scan's pins suffice.
        let pins: Vec<TxnId> = self.pins.iter().map(|p| p.txn).collect();
        let no_reader_since = move |t: TxnId| !pins.iter().any(|&p| t <= p && p < txn);
        // One sync suffices when every write not known synced is listed (the allocator knows
        // whether it tracked them all, DESIGN §4.3).
        let summary = match self.alloc().persist(txn, durable_txn, durable, &no_reader_since) {
            Ok(s) => s,
            Err(e) => {
                if let Some(staged) = staged {
                    self.unclaim(staged, &e);
                }
                return self.fail(e);
            }
        };
        let snap = Snapshot {
            txn,
            map: self.map,
            slot: 0, // chosen when the slot is written
            durable,
            same_boot: true,
            alloc: summary,
        };
        // Compaction's last commit gives the file's tail back right after its sync: it syncs
        // under the writer mutex.
        if durable && summary.one_phase && !self.shrink_fully {
            return self.commit_grouped(snap, stage);
        }
        // Meta slots are written only while no sync of the handle is in flight (the syncer
        // must find its slot intact); this commit is its own syncer. Nothing is staged: this
        // commit claimed what was, and staging takes the writer mutex, which it holds.
        let mut g = self.shared.group.wait_idle()?;
        if durable && !summary.one_phase {
            g.syncing = true;
            drop(g);
            self.sync_commit()?;
            g = self.shared.group.lock();
            g.syncing = false;
        }
        let slot = write_slot(&self.shared, &mut g, &snap).inspect_err(|e| {
            // Its waiters (of a staged commit it contains) must not wait for ever.
            g.fail(e);
            self.shared.group.notify();
        })?;
        if durable {
            g.syncing = true;
            drop(g);
            self.sync_commit()?;
            g = self.shared.group.lock();
            g.syncing = false;
            // It contains the staged commit it claimed, if any, whose waiters it satisfies.
            g.synced(txn, slot);
            g.clean = Some(txn);
            self.shared.group.notify();
        }
        drop(g);
        self.alloc().committed(durable);
        self.guard.loaded = txn;
        if durable {
            self.shrink();
        }
        Ok(After::Done)
    }

    /// This commit failed after claiming the staged commit `staged`: give it back to its
    /// waiters, whole (I18), unless this commit's blob took its blob's run — then fail them and
    /// poison the handle (only a failed write, which poisons anyway, gets there: every
    /// allocation that may grow the file comes first).
    fn unclaim(&mut self, staged: Snapshot, e: &crate::Error) {
        let reused = self.alloc().staged_blob() == StagedBlob::Reused;
        let mut g = self.shared.group.lock();
        if reused {
            self.shared.poison();
            g.fail(e);
        } else {
            debug_assert!(g.staged.is_none(), "nothing is staged while a writer commits");
            g.staged = Some(staged);
        }
        self.shared.group.notify();
    }

    /// A durable one-phase commit: stage it while a sync of the handle is in flight (or when
    /// asked to), else write its meta slot and become the syncer (DESIGN §4.3).
    fn commit_grouped(&mut self, snap: Snapshot, stage: bool) -> Result<After> {
        // Its records count as reachable from a durable commit from now on (whether it becomes
        // durable itself or through a later commit that contains it): freed later, they wait
        // for a durable commit (I3).
        self.alloc().committed(true);
        self.guard.loaded = snap.txn;
        let mut g = self.shared.group.lock();
        if stage || g.syncing {
            // It contains the commit staged before it, if any (claimed: see `commit_inner`),
            // whose waiters may now sync it — unless a sync is in flight: then no waiter can act
            // on it before that sync ends, which wakes them all. (Woken at every staged commit
            // as well, 8 committing threads made 1.75x the context switches and 1.2x the CPU
            // time per commit: docs/benchmarks.md.)
            g.staged = Some(snap);
            g.clean = None;
            if !g.syncing {
                self.shared.group.notify();
            }
            return Ok(After::Wait(snap.txn));
        }
        let slot = write_slot(&self.shared, &mut g, &snap).inspect_err(|e| {
            g.fail(e);
            self.shared.group.notify();
        })?;
        // It contains the staged commit it claimed, if any: that one's waiters wait for this
        // sync.
        debug_assert!(g.staged.is_none());
        g.syncing = true;
        Ok(After::Sync { txn: snap.txn, slot })
    }

    /// Give back the file's tail when it holds nothing any commit or snapshot can reach and
    /// is long enough to be worth it (twice the growth step, so growth and shrinking do not
    /// alternate). Only right after a durable commit, whose sync covered every write the slots
    /// refer to (S3): the truncation needs no sync of its own, so no failure here can touch a
    /// commit that was acknowledged. (Or at the start of a transaction whose base is such a
    /// commit, nothing written since: after group commits, whose syncers hold no lock.) Best
    /// effort: a failure here loses nothing.
    pub(super) fn shrink(&mut self) {
        let len = self.shared.storage.len();
        let Ok(Some(floor)) = self.shared.shrink_floor(&self.pins, self.anonymous) else { return };
        let slack = if self.shrink_fully { 0 } else { (floor / 64).max(256 << 10) };
        let keep = (floor + slack).next_multiple_of(PAGE_SIZE);
        let worth = if self.shrink_fully { 0 } else { super::write::SHRINK_WORTH.max(len / 16) };
        if len > keep && len - keep >= worth {
            let _ = self.shared.storage.truncate(keep);
        }
    }
}
