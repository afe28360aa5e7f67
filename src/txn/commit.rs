//! The commit protocol (DESIGN §4): write beside, sync, switch one meta slot, sync; and what a
//! failed sync leaves behind (S1, §4.6).

use super::Durability;
use super::write::WriteTxn;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::format::*;
use crate::meta::{Snapshot, encode_meta, read_slots};

impl WriteTxn {
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

    /// Make the changes visible (and, with [`Durability::Immediate`], durable): when it returns
    /// `Ok`, every new read transaction of any process sees them, and they are never undone.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when a write or a sync fails: the commit did not happen as far as any later
    /// opener is concerned (a failed sync makes the heap forget every commit it could not prove
    /// synced, DESIGN §4.6), and the handle is poisoned; [`Error::TxnFailed`] after an earlier
    /// failure of the transaction.
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
            map: self.map,
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
}
