//! Group commit (DESIGN §4.3): durable commits of one handle's threads share syncs.
//!
//! A durable one-phase commit does not sync under the writer's mutex. If no sync of the handle
//! is in flight, its committer becomes the *syncer*: it writes the commit's meta slot, lets the
//! mutex go and syncs. Commits made meanwhile are *staged*: built and persisted (their records
//! and allocator blob written, their extents tracked together with those of every commit not
//! yet known synced), but with no meta slot; each replaces the one staged before it, which it
//! contains. When the sync ends, one waiting committer becomes the next syncer: it writes the
//! meta slot of the latest staged commit and syncs once for all of them. A commit returns `Ok`
//! only once a sync that began after its meta slot (or a newer one that contains it) was written
//! has succeeded; a failed sync fails every commit waiting on it, and poisons the handle.
//!
//! Ownership: the writer mutex (`Shared::writer`, holding `WriterState`) orders the
//! transactions; the group's own mutex (`Shared::group`) holds which slots hold what, the staged
//! commit, who syncs and how far syncs have reached. Every meta-slot write of a writer holding
//! the registry's writer lock happens under the group's mutex, and a staged commit's slot is
//! written under it alone: a syncer never waits for the writer mutex, so no commit waits for
//! another thread's open transaction (I17). The registry's writer lock (other processes) stays
//! held from the first transaction until the last staged commit is synced, so no other process
//! ever builds on a commit whose sync is in flight.

use crate::error::Result;
use crate::format::*;
use crate::meta::{Snapshot, encode_meta, read_slots};
use crate::shared::{GroupState, Shared};

/// Write the meta slot of `snap` into the slot holding neither the last durable commit nor the
/// latest (I2); of those, the one holding the oldest commit (or none), so that every slot turns
/// over and no stale slot keeps the file long (I12). Returns the slot. The caller holds the
/// group's mutex (`g`), and no sync of the handle is in flight.
pub(crate) fn write_slot(shared: &Shared, g: &mut GroupState, snap: &Snapshot) -> Result<usize> {
    debug_assert!(!g.syncing, "no slot is written while a sync is in flight");
    let view = shared.storage.view();
    let held = read_slots(&view, &shared.boot);
    let txn_of = |i: usize| held.iter().find(|s| s.slot == i).map_or(TxnId(0), |s| s.txn);
    let slot = (0..META_SLOTS)
        .filter(|&i| i != g.durable.1 && i != g.latest_slot)
        .min_by_key(|&i| txn_of(i))
        .expect("three slots");
    let meta = encode_meta(&Snapshot { slot, ..*snap }, &shared.boot);
    shared.storage.write_meta(META_OFFSETS[slot], &meta).inspect_err(|_| shared.poison())?;
    g.latest_slot = slot;
    Ok(slot)
}

/// After a failed sync: the kernel may have dropped the unsynced pages while keeping them
/// readable (Linux marks them clean), so a later process would trust commits whose data never
/// reaches the disk, and build durable commits on them. Invalidate, in the page cache, every
/// meta slot newer than `durable`, the last commit known synced: every later opener starts from
/// it (I13). Best effort: if these writes fail too, nothing more can be done. No meta slot is
/// written concurrently (the caller holds the group's mutex).
pub(crate) fn forget_unsynced(shared: &Shared, durable: TxnId) {
    let view = shared.storage.view();
    for s in read_slots(&view, &shared.boot) {
        if s.txn > durable {
            let _ = shared.storage.write_meta(META_OFFSETS[s.slot], &[0; META_SIZE]);
        }
    }
}

/// What a committer does after its transaction let the writer mutex go.
#[derive(Debug)]
pub(crate) enum After {
    /// Nothing: the commit is done.
    Done,
    /// Sync, as the syncer of commit `txn`, whose meta slot `slot` was written.
    Sync { txn: TxnId, slot: usize },
    /// Wait for a sync that covers staged commit `txn`.
    Wait(TxnId),
}

/// Run the sync of the syncer (see [`After::Sync`]), publish how far it reached, and wake the
/// waiters (one of whom syncs the commits staged meanwhile). A failure poisons the handle,
/// forgets every commit newer than the last one known durable (I13) and fails every waiter.
pub(crate) fn sync_as_syncer(shared: &Shared, txn: TxnId, slot: usize) -> Result<()> {
    let res = shared.storage.sync();
    let mut g = shared.group.lock();
    match &res {
        Ok(()) => {
            g.synced(txn, slot);
            g.syncing = false;
            // Nothing written since, unless a commit was staged or a transaction is open.
            g.clean = (g.staged.is_none() && !g.writing).then_some(txn);
        }
        Err(e) => {
            shared.poison();
            forget_unsynced(shared, g.durable.0);
            g.fail(e);
        }
    }
    g.release_if_idle(shared);
    shared.group.notify();
    res
}

/// If no sync is in flight and a commit is staged, write its meta slot (under the group's mutex
/// alone) and make the caller its syncer: returns what [`sync_as_syncer`] takes. A handle
/// poisoned since the commit was staged fails it, and every commit waiting on it.
fn begin_staged_sync(shared: &Shared, g: &mut GroupState) -> Result<Option<(TxnId, usize)>> {
    if g.syncing || g.failed.is_some() {
        return Ok(None);
    }
    let Some(snap) = g.staged else { return Ok(None) };
    let slot = shared.check().and_then(|()| write_slot(shared, g, &snap)).inspect_err(|e| {
        g.fail(e);
        g.release_if_idle(shared);
        shared.group.notify();
    })?;
    g.staged = None;
    g.syncing = true;
    Ok(Some((snap.txn, slot)))
}

/// Return once commit `txn` (staged, or written by a syncer) is durable: wait while a sync is
/// in flight; when none is and `txn` is not yet durable, become the syncer of the staged commit
/// (the latest, which contains `txn`). Never waits for the writer mutex.
pub(crate) fn wait_durable(shared: &Shared, txn: TxnId) -> Result<()> {
    let mut g = shared.group.lock();
    loop {
        if let Some(e) = g.failure() {
            return Err(e);
        }
        if g.durable.0 >= txn {
            return Ok(());
        }
        match begin_staged_sync(shared, &mut g)? {
            Some((staged, slot)) => {
                drop(g);
                // A failure reaches every waiter through the group's state.
                let _ = sync_as_syncer(shared, staged, slot);
                g = shared.group.lock();
            }
            None => shared.group.wait(&mut g),
        }
    }
}

/// Return once nothing of the group is staged or syncing: everything this handle committed is
/// durable, or the sync failed (`Err`).
pub(crate) fn wait_group_idle(shared: &Shared) -> Result<()> {
    let staged = shared.group.lock().staged.map(|s| s.txn);
    if let Some(txn) = staged {
        wait_durable(shared, txn)?;
    }
    shared.group.wait_idle().map(drop)
}
