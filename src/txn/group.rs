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
//! Ownership: the writer mutex (`Shared::writer`, holding `WriterState`) orders everything that
//! writes the file or a meta slot; the group's own mutex (`Shared::group`) holds who syncs and how far syncs
//! have reached, and is never held while waiting for the writer mutex. The registry's writer
//! lock (other processes) stays held from the first transaction until the last staged commit
//! is synced, so no other process ever builds on a commit whose sync is in flight.

use std::sync::Arc;

use crate::env::{Shared, WriterState, merge_synced};
use crate::error::Result;
use crate::format::*;
use crate::meta::{Snapshot, encode_meta, read_slots};

/// Write the meta slot of `snap` into the slot holding neither the last durable commit nor the
/// latest (I2); of those, the one holding the oldest commit (or none), so that every slot turns
/// over and no stale slot keeps the file long (I12). Returns the slot. The caller holds the
/// writer mutex, and no sync of the handle is in flight.
pub(crate) fn write_slot(shared: &Shared, w: &mut WriterState, snap: &Snapshot) -> Result<usize> {
    let view = shared.storage.view();
    let held = read_slots(&view, &shared.boot);
    let txn_of = |i: usize| held.iter().find(|s| s.slot == i).map_or(TxnId(0), |s| s.txn);
    let slot = (0..META_SLOTS)
        .filter(|&i| i != w.durable_slot && i != w.latest_slot)
        .min_by_key(|&i| txn_of(i))
        .expect("three slots");
    let meta = encode_meta(&Snapshot { slot, ..*snap }, &shared.boot);
    shared.storage.write_meta(META_OFFSETS[slot], &meta).inspect_err(|_| shared.poison())?;
    w.latest_slot = slot;
    Ok(slot)
}

/// After a failed sync: the kernel may have dropped the unsynced pages while keeping them
/// readable (Linux marks them clean), so a later process would trust commits whose data never
/// reaches the disk, and build durable commits on them. Invalidate, in the page cache, every
/// meta slot newer than `durable`, the last commit known synced: every later opener starts from
/// it (I13). Best effort: if these writes fail too, nothing more can be done. No meta slot is
/// written concurrently (the caller holds the writer mutex, or is the syncer).
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
    /// Sync, as the syncer of commit `txn`, whose meta slot `slot` was written on top of the
    /// last durable commit `durable`.
    Sync { txn: TxnId, slot: usize, durable: TxnId },
    /// Wait for a sync that covers staged commit `txn`.
    Wait(TxnId),
}

/// Run the sync of the syncer (see [`After::Sync`]), publish how far it reached, and wake the
/// waiters. A failure poisons the handle, forgets every commit newer than `durable` (I13) and
/// fails every waiter.
pub(crate) fn sync_as_syncer(
    shared: &Shared,
    txn: TxnId,
    slot: usize,
    durable: TxnId,
) -> Result<()> {
    let res = shared.storage.sync();
    let mut g = shared.group.lock();
    match &res {
        Ok(()) => {
            if g.synced_txn() < txn {
                g.synced = Some((txn, slot));
            }
            g.syncing = false;
            // Nothing written since, unless a commit was staged or a transaction is open.
            g.clean = (!g.staged && !g.writing).then_some(txn);
        }
        Err(e) => {
            shared.poison();
            forget_unsynced(shared, durable);
            g.fail(e);
        }
    }
    g.release_if_idle(shared);
    shared.group.notify();
    res
}

/// Return once commit `txn` (staged, or written by a syncer) is durable: wait while a sync is
/// in flight; when none is and `txn` is not yet durable, become the syncer of the latest staged
/// commit (which contains `txn`).
pub(crate) fn wait_durable(shared: &Arc<Shared>, txn: TxnId) -> Result<()> {
    loop {
        {
            let mut g = shared.group.lock();
            loop {
                if let Some(e) = g.failure() {
                    return Err(e);
                }
                if g.synced_txn() >= txn {
                    return Ok(());
                }
                if !g.syncing {
                    break;
                }
                shared.group.wait(&mut g);
            }
        }
        lead(shared)?;
    }
}

/// A syncer whose own commit is durable syncs the commits staged meanwhile at once, if no one
/// has begun to: the disk does not wait for a waiter to wake. Its own commit stands whatever
/// that sync does (a failure there reaches that sync's waiters).
pub(crate) fn hand_over(shared: &Arc<Shared>) {
    let g = shared.group.lock();
    if g.staged && !g.syncing && g.failed.is_none() {
        drop(g);
        let _ = lead(shared);
    }
}

/// If no sync is in flight and a commit is staged, write its meta slot and sync it.
fn lead(shared: &Arc<Shared>) -> Result<()> {
    // The writer mutex first, then the group (the order every path takes).
    let mut w = shared.writer.lock();
    let mut g = shared.group.lock();
    if g.syncing || g.failed.is_some() || !g.staged {
        return Ok(());
    }
    // A write failed since the commit was staged (the handle is poisoned): what the staged
    // commit refers to may be overwritten (its blob's run goes to the next blob). Fail it.
    // (Found by `every_failure_kind_at_every_operation`: a short write of the next blob, then
    // this slot named a torn blob.)
    if let Err(e) = shared.check() {
        g.fail(&e);
        g.release_if_idle(shared);
        shared.group.notify();
        return Err(e);
    }
    let Some(snap) = w.staged.take() else {
        debug_assert!(false, "the group says staged, the writer holds none");
        return Ok(());
    };
    g.staged = false;
    g.syncing = true;
    merge_synced(&mut w, &g);
    drop(g);
    if let Some(a) = w.alloc.as_mut() {
        a.set_blob_published(true);
    }
    let durable = w.durable_txn;
    let slot = match write_slot(shared, &mut w, &snap) {
        Ok(slot) => slot,
        Err(e) => {
            let mut g = shared.group.lock();
            g.fail(&e);
            g.release_if_idle(shared);
            shared.group.notify();
            return Err(e);
        }
    };
    drop(w);
    sync_as_syncer(shared, snap.txn, slot, durable)
}
