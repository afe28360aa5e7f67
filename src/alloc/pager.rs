//! The writer's reads and writes: the storage, its current view, the file's growth, and the
//! ranges a transaction wrote (the extents of a one-phase commit).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::Result;
use crate::format::*;
use crate::storage::{Storage, View};

/// Smallest growth step of the file.
const MIN_GROW: u64 = 256 << 10;

/// Writes of a durable transaction that go through the file rather than the mapping
/// (DESIGN §4.3a): the first this many, each at most [`SYSCALL_WRITE_MAX`] bytes. A small
/// commit makes about ten; a larger transaction stores the rest through the mapping, where a
/// page takes many of its writes for one fault.
const SYSCALL_WRITES: u32 = 64;
/// Longer writes are stores into the mapping (or, from 1 MiB, the storage's own write(2)).
const SYSCALL_WRITE_MAX: u64 = 16 << 10;

/// Reads and writes of the writer: the storage and its current view.
#[derive(Debug)]
pub(crate) struct Pager {
    storage: Arc<dyn Storage>,
    view: Arc<View>,
    /// A write failed: the heap must be poisoned.
    pub(crate) failed: bool,
    /// Ranges written and not yet known synced (start -> length and the transaction that wrote
    /// them), while they stay few and small enough for a one-phase commit (`None` once they do
    /// not). Kept across commits while their syncs are in flight (group commit, DESIGN §4.3).
    track: Option<BTreeMap<u64, (u64, TxnId)>>,
    track_bytes: u64,
    /// The transaction whose writes are being tracked.
    writing: TxnId,
    /// Writes of commits up to this one may be unsynced and are not tracked (tracking restarted
    /// on top of it): the tracked ranges cover every unsynced write only once it is synced.
    /// `None`: they always did (tracking started on a synced file).
    untracked_upto: Option<TxnId>,
    /// The `synced` the tracked ranges were last pruned at.
    pruned: TxnId,
    /// How many more writes of the running transaction go through the file (write(2)).
    syscall_writes: u32,
}

impl Pager {
    pub(crate) fn new(storage: Arc<dyn Storage>) -> Pager {
        let view = storage.view();
        Pager {
            storage,
            view,
            failed: false,
            track: None,
            track_bytes: 0,
            writing: TxnId(0),
            untracked_upto: None,
            pruned: TxnId(0),
            syscall_writes: 0,
        }
    }
    pub(crate) fn view(&self) -> &Arc<View> {
        &self.view
    }
    /// The file's length.
    pub(super) fn len(&self) -> u64 {
        self.storage.len()
    }
    pub(crate) fn write(&mut self, off: Offset, data: &[u8]) -> Result<()> {
        let res = if self.by_syscall(data.len() as u64) {
            self.storage.write_by_syscall(off.0, data)
        } else {
            self.storage.write(off.0, data)
        };
        self.note_write(off, data.len() as u64, res)
    }

    /// Write `len` bytes at `off` that `fill` produces in place (see `Storage::write_with`).
    pub(crate) fn write_with(
        &mut self,
        off: Offset,
        len: u64,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<()> {
        let res = if self.by_syscall(len) {
            let mut buf = vec![0u8; len as usize];
            fill(&mut buf);
            self.storage.write_by_syscall(off.0, &buf)
        } else {
            self.storage.write_with(off.0, len, fill)
        };
        self.note_write(off, len, res)
    }

    /// Does the next write, of `len` bytes, go through the file? (It counts if so.)
    fn by_syscall(&mut self, len: u64) -> bool {
        let yes = self.syscall_writes > 0 && len <= SYSCALL_WRITE_MAX;
        self.syscall_writes -= u32::from(yes);
        yes
    }

    /// The running transaction's first writes go through the file (`durable`) or all of them
    /// into the mapping: a commit that syncs gains from writes its sync need not write-protect
    /// again, one that does not would pay a system call per write for nothing (DESIGN §4.3a).
    pub(crate) fn route_writes(&mut self, durable: bool) {
        self.syscall_writes = if durable { SYSCALL_WRITES } else { 0 };
    }

    fn note_write(&mut self, off: Offset, len: u64, res: Result<()>) -> Result<()> {
        self.failed |= res.is_err();
        if let Some(t) = &mut self.track {
            let old = t.insert(off.0, (len, self.writing)).map_or(0, |o| o.0);
            self.track_bytes = self.track_bytes + len - old.min(self.track_bytes);
            if t.len() > 4 * MAX_ONE_PHASE_EXTENTS || self.track_bytes > MAX_ONE_PHASE_BYTES {
                self.track = None;
            }
        }
        res
    }

    /// Track the writes of transaction `txn`, built on commit `base`. `synced`: the newest commit
    /// known synced (every write of it and of earlier commits is on disk); `all_synced`:
    /// everything written before now is (the file was just settled). Ranges last written by
    /// commits up to `synced` are forgotten; the others stay tracked, so that a one-phase commit
    /// on top of commits whose sync is still in flight lists their writes too.
    pub(super) fn track(&mut self, txn: TxnId, base: TxnId, synced: TxnId, all_synced: bool) {
        self.writing = txn;
        if all_synced || self.track.is_none() {
            self.track = Some(BTreeMap::new());
            self.track_bytes = 0;
            self.untracked_upto = (!all_synced).then_some(base);
        } else if let Some(t) = &mut self.track
            && synced > self.pruned
        {
            // Only when a sync has succeeded since: non-durable commits in a row do not pay it.
            t.retain(|_, w| w.1 > synced);
            self.track_bytes = t.values().map(|w| w.0).sum();
        }
        self.pruned = synced;
        if self.untracked_upto.is_some_and(|u| u <= synced) {
            self.untracked_upto = None;
        }
    }

    /// Forget the writes inside `start..start + len`: the transaction freed that space, so no
    /// commit from this one on reaches it, and a later commit may reuse it before a sync: a
    /// commit's extents list only what its snapshot reaches, or an overwrite of freed space
    /// would fail the check of an acknowledged commit (writes never straddle a record's bounds).
    /// A commit made earlier keeps its own list in its blob.
    pub(super) fn untrack(&mut self, start: u64, len: u64) {
        if let Some(t) = &mut self.track {
            let inside: Vec<u64> = t.range(start..start + len).map(|(&o, _)| o).collect();
            for o in inside {
                self.track_bytes -= t.remove(&o).map_or(0, |w| w.0).min(self.track_bytes);
            }
        }
    }

    /// The ranges below `end` written and not known synced, coalesced, if they are all tracked.
    /// (Ranges at or past `end` were given back by a later commit: its snapshot reaches none.)
    pub(super) fn extents(&self, end: u64) -> Option<Vec<(u64, u64)>> {
        if self.untracked_upto.is_some() {
            return None;
        }
        let t = self.track.as_ref()?;
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(t.len());
        for (&off, &(len, _)) in t.range(..end) {
            let len = len.min(end - off);
            match out.last_mut() {
                Some((o, l)) if off <= *o + *l => *l = (*l).max(off + len - *o),
                _ => out.push((off, len)),
            }
        }
        (out.len() <= MAX_ONE_PHASE_EXTENTS).then_some(out)
    }
    /// Make the file at least `end` bytes long, growing by a step proportional to its size.
    pub(super) fn ensure_len(&mut self, end: u64) -> Result<()> {
        let len = self.storage.len();
        if end <= len {
            return Ok(());
        }
        let step = (len / 64).clamp(MIN_GROW, 256 << 20);
        let target = end.max(len + step).next_multiple_of(PAGE_SIZE);
        self.storage.grow(target)?;
        self.view = self.storage.view();
        Ok(())
    }
}
