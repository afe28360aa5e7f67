//! The writer's reads and writes: the storage, its current view, the file's growth, and the
//! ranges a transaction wrote (the extents of a one-phase commit).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::Result;
use crate::format::*;
use crate::storage::{Storage, View};

/// Smallest growth step of the file.
const MIN_GROW: u64 = 256 << 10;

/// Reads and writes of the writer: the storage and its current view.
#[derive(Debug)]
pub(crate) struct Pager {
    storage: Arc<dyn Storage>,
    view: Arc<View>,
    /// A write failed: the heap must be poisoned.
    pub(crate) failed: bool,
    /// Ranges written by the running transaction and still in use (start -> length), while
    /// they stay few and small enough for a one-phase commit (`None` once they do not).
    track: Option<BTreeMap<u64, u64>>,
    track_bytes: u64,
}

impl Pager {
    pub(crate) fn new(storage: Arc<dyn Storage>) -> Pager {
        let view = storage.view();
        Pager { storage, view, failed: false, track: None, track_bytes: 0 }
    }
    pub(crate) fn view(&self) -> &Arc<View> {
        &self.view
    }
    /// The file's length.
    pub(super) fn len(&self) -> u64 {
        self.storage.len()
    }
    pub(crate) fn write(&mut self, off: Offset, data: &[u8]) -> Result<()> {
        let res = self.storage.write(off.0, data);
        self.note_write(off, data.len() as u64, res)
    }

    /// Write `len` bytes at `off` that `fill` produces in place (see `Storage::write_with`).
    pub(crate) fn write_with(
        &mut self,
        off: Offset,
        len: u64,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<()> {
        let res = self.storage.write_with(off.0, len, fill);
        self.note_write(off, len, res)
    }

    fn note_write(&mut self, off: Offset, len: u64, res: Result<()>) -> Result<()> {
        self.failed |= res.is_err();
        if let Some(t) = &mut self.track {
            let old = t.insert(off.0, len).unwrap_or(0);
            self.track_bytes = self.track_bytes + len - old.min(self.track_bytes);
            if t.len() > 4 * MAX_ONE_PHASE_EXTENTS || self.track_bytes > MAX_ONE_PHASE_BYTES {
                self.track = None;
            }
        }
        res
    }

    pub(super) fn start_tracking(&mut self) {
        self.track = Some(BTreeMap::new());
        self.track_bytes = 0;
    }

    /// Forget the writes inside `start..start + len`: the transaction freed that space again, so
    /// a later commit may reuse it and its content is not part of this commit (writes never
    /// straddle a record's bounds).
    pub(super) fn untrack(&mut self, start: u64, len: u64) {
        if let Some(t) = &mut self.track {
            let inside: Vec<u64> = t.range(start..start + len).map(|(&o, _)| o).collect();
            for o in inside {
                self.track_bytes -= t.remove(&o).unwrap_or(0).min(self.track_bytes);
            }
        }
    }

    /// The ranges written and still in use, coalesced, if still tracked.
    pub(super) fn extents(&self) -> Option<Vec<(u64, u64)>> {
        let t = self.track.as_ref()?;
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(t.len());
        for (&off, &len) in t {
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
