//! Online compaction (`Heap::compact`, DESIGN §3.3): sweeps, then bounded steps that move
//! records out of the file's tail, each its own write transaction, then durable commits that
//! give the tail back.

use crate::alloc::Evacuation;
use crate::error::{Error, Result};
use crate::format::*;
use crate::heap::Heap;
use crate::txn::Durability;

/// Compaction rounds at most: each plans the spans to empty and empties them in bounded steps;
/// records a round could not place (no room below the limit until the spans it empties are
/// swept) move in the next. Rounds stop early once nothing is left past the limit.
const MAX_COMPACT_ROUNDS: usize = 8;

/// What [`Heap::compact`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactStats {
    /// Length of the file when compaction began.
    pub file_size_before: u64,
    /// Length of the file when it ended (space pinned snapshots still reach is given back by
    /// later commits, once they end).
    pub file_size_after: u64,
    /// Bytes of records moved (nodes included).
    pub moved_bytes: u64,
    /// Write transactions it took.
    pub steps: u64,
}

impl Heap {
    /// Move live records out of the file's tail and give the tail back, online: readers of
    /// every process keep their snapshots (their slices stay valid), and the writer lock is
    /// taken in bounded steps (each moves about `max(32 MiB, used / 16)` bytes), so other
    /// writers interleave. Space that pinned snapshots still reach is given back once they
    /// end, by later commits. A heap already within a tenth (plus 1 MiB) of its live bytes is
    /// left as it is. See DESIGN.md §3.3.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
    /// let stats = heap.compact()?;
    /// assert!(stats.file_size_after <= stats.file_size_before);
    /// # Ok::<(), pheap::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Heap::begin_write`]: each step is a write transaction, and one that fails ends the
    /// compaction with the heap consistent at the last step that committed.
    pub fn compact(&self) -> Result<CompactStats> {
        self.compact_with(false)
    }

    /// `compact`; with `always`, even a heap already small enough (tests use it on tiny heaps).
    pub(crate) fn compact_with(&self, always: bool) -> Result<CompactStats> {
        if self.sealed() {
            return Err(Error::Sealed { path: self.path().to_owned() });
        }
        let before = self.stats()?;
        if !always && before.file_size <= before.live_bytes + before.live_bytes / 10 + (1 << 20) {
            // Already within what compaction aims for: nothing to win.
            return Ok(CompactStats {
                file_size_before: before.file_size,
                file_size_after: before.file_size,
                moved_bytes: 0,
                steps: 0,
            });
        }
        let budget = (before.used_size / 16).max(32 << 20);
        let (mut moved, mut steps) = (0, 0);
        // A durable commit that sweeps (and, with `plan`, chooses the spans to empty).
        let sweep = |plan: Option<u64>, shrink_fully: bool| -> Result<Evacuation> {
            let mut tx = self.begin_write()?;
            tx.set_durability(Durability::Immediate);
            let e = tx.sweep(plan)?;
            tx.shrink_fully = shrink_fully;
            tx.commit()?;
            Ok(e)
        };
        sweep(None, false)?;
        // Where the file could end: the live bytes and a tenth for span headers, partly filled
        // spans and the allocator's own pages.
        let limit =
            (DATA_START + before.live_bytes + before.live_bytes / 10).next_multiple_of(PAGE_SIZE);
        for _round in 0..MAX_COMPACT_ROUNDS {
            let plan = sweep(Some(limit), false)?;
            let mut round = 0;
            let mut at = Some(0);
            while let Some(from) = at {
                let mut tx = self.begin_write()?;
                tx.set_durability(Durability::None);
                let (m, next) = tx.lower_step(from, &plan, budget)?;
                tx.commit()?;
                (round, at, steps) = (round + m, next, steps + 1);
            }
            moved += round;
            // Durable, so that what the moved records left behind can be reused; the next
            // sweeps find the emptied spans and return them to the free runs.
            self.checkpoint()?;
            sweep(None, false)?;
            // Done when a round moved nothing, or when nothing is left past the limit. Records
            // that found no room below the limit in one round (room appears only as the spans
            // emptied before it are swept) move in the next: each round moves less.
            if round == 0 || self.begin_read()?.snapshot().alloc.end <= limit {
                break;
            }
        }
        // The emptied tail is released by the next durable commits, then given back once no
        // meta slot (and no pinned snapshot) reaches it.
        for i in 0..3 {
            sweep(None, i == 2)?;
        }
        let after = self.stats()?;
        Ok(CompactStats {
            file_size_before: before.file_size,
            file_size_after: after.file_size,
            moved_bytes: moved,
            steps,
        })
    }
}
