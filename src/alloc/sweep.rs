//! Sweeping (empty spans back to the free runs, free slots lowest first) and compaction's
//! allocation: the spans a compaction empties and the places records move to.

use std::collections::{HashMap, HashSet};

use super::{Allocator, ClassState};
use crate::error::{Result, corrupt};
use crate::format::*;

/// The slab spans a compaction empties: (start, end), sorted; new spans only below `limit`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Evacuation {
    pub spans: Vec<(u64, u64)>,
    pub limit: u64,
}

impl Evacuation {
    pub(crate) fn contains(&self, off: u64) -> bool {
        let i = self.spans.partition_point(|sp| sp.0 <= off);
        i > 0 && off < self.spans[i - 1].1
    }
}

impl Allocator {
    /// Compaction: a run for a record of `size` bytes (larger than a slab record) if the free
    /// run it would get lies below `limit`; `None` changes nothing.
    pub(crate) fn alloc_below(&mut self, size: u64, limit: Offset) -> Result<Option<Offset>> {
        let limit = limit.0;
        debug_assert!(size > MAX_SLAB_SIZE);
        let pages = record_run_pages(size);
        if self.find_run(pages).is_none_or(|r| r.0 + pages * PAGE_SIZE > limit) {
            return Ok(None);
        }
        Ok(Some(self.alloc(size)?))
    }

    /// Stop carving class `c`'s current span: its never-used slots become free slots.
    fn retire_cursor(&mut self, c: usize) {
        let st = &mut self.classes[c];
        if st.span == 0 {
            return;
        }
        let s = CLASS_SIZES[c] as u64;
        let rest: Vec<u64> = (st.next_slot..span_slots(c))
            .rev()
            .map(|i| st.span + RUN_HEADER_SIZE + i as u64 * s)
            .collect();
        self.free_bytes += rest.len() as u64 * s;
        st.top.extend(rest);
        (st.span, st.next_slot) = (0, 0);
    }

    /// Rebuild the free stacks: slots of spans whose every carved slot is free go back to the
    /// free runs as whole spans (any class may use them, and a free tail lowers `end`), and the
    /// remaining slots are ordered so that the lowest addresses are allocated first. O(runs +
    /// free slots); run when much space sits in free slots (see [`Allocator::sweep_due`]) and by
    /// compaction.
    pub(crate) fn sweep(&mut self) -> Result<()> {
        self.sweep_and_plan(None).map(drop)
    }

    /// As [`Allocator::sweep`]; with a `plan` limit, also choose the spans compaction empties:
    /// every span reaching past the limit, and per class, of the spans below it, all but the
    /// lowest ones whose free slots can take the live records of the others; free slots are
    /// then ordered kept spans first. Records that find no kept slot go to new spans cut from
    /// free runs below the limit.
    pub(crate) fn sweep_and_plan(&mut self, plan: Option<u64>) -> Result<Evacuation> {
        let limit = plan.unwrap_or(u64::MAX);
        let plan = plan.is_some();
        self.dirty = true;
        self.freed_since_sweep = 0;
        // Spans by start, from a walk of the runs (as the integrity walk does, I5).
        let mut pending_runs = HashMap::new();
        let mut pending_slots = Vec::new();
        for p in self.pending.iter().chain(&self.pending_ro) {
            for f in self.read_batch(p)?.freed {
                match f {
                    Freed::Run { start, pages } => {
                        pending_runs.insert(start, pages);
                    }
                    Freed::Slot { off, .. } => pending_slots.push(off),
                }
            }
        }
        let mut evacuation = Evacuation { spans: Vec::new(), limit };
        let mut spans: Vec<(u64, usize)> = Vec::new();
        let mut page = DATA_START;
        while page < self.end {
            if let Some(&pages) = self.runs.get(&page).or(pending_runs.get(&page)) {
                page += pages * PAGE_SIZE;
                continue;
            }
            let h = self.run_header(page)?;
            if h.kind.get() == RUN_SLAB {
                spans.push((page, h.class.get() as usize));
            }
            page += h.pages.get() as u64 * PAGE_SIZE;
        }
        let span_of =
            |o: u64| spans.partition_point(|sp| sp.0 <= o).checked_sub(1).map(|i| spans[i]);
        let mut pending_in: HashMap<u64, u32> = HashMap::new();
        for &o in &pending_slots {
            if let Some((start, _)) = span_of(o) {
                *pending_in.entry(start).or_default() += 1;
            }
        }
        #[allow(clippy::needless_range_loop)] // `c` indexes the classes and names the class
        for c in 0..NUM_CLASSES {
            let st = std::mem::take(&mut self.classes[c]);
            let mut slots = st.top.clone();
            let mut chunks = Vec::new();
            for (page, entries) in self.read_chain(st.below)? {
                chunks.push(page);
                slots.extend(entries);
            }
            if slots.is_empty() && st.span == 0 && !plan {
                self.classes[c] = st;
                continue;
            }
            let s = CLASS_SIZES[c] as u64;
            let mut free_in: HashMap<u64, u32> = HashMap::new();
            for &o in &slots {
                let i = spans.partition_point(|sp| sp.0 <= o);
                let span = i.checked_sub(1).map(|i| spans[i]);
                match span {
                    Some((start, sc))
                        if sc == c && o < start + span_pages(c) as u64 * PAGE_SIZE =>
                    {
                        *free_in.entry(start).or_default() += 1;
                    }
                    _ => return Err(corrupt(o, "free slot outside a span of its class")),
                }
            }
            // The span being carved counts as empty when every slot carved so far is free.
            let carved = |span: u64| if span == st.span { st.next_slot } else { span_slots(c) };
            let mut empty: HashSet<u64> = free_in
                .iter()
                .filter(|&(&span, &n)| n == carved(span))
                .map(|(&span, _)| span)
                .collect();
            if st.span != 0 && st.next_slot == 0 {
                empty.insert(st.span);
            }
            let (mut span, mut next_slot) = (st.span, st.next_slot);
            if empty.contains(&span) {
                (span, next_slot) = (0, 0);
            }
            for page in chunks {
                self.free_run(page, 1);
            }
            let mut keep: Vec<u64> = Vec::with_capacity(slots.len());
            for o in slots {
                let i = spans.partition_point(|sp| sp.0 <= o) - 1;
                if !empty.contains(&spans[i].0) {
                    keep.push(o);
                }
            }
            for &e in &empty {
                let pages = span_pages(c) as u64;
                // The slots were counted free; the span becomes a freed run of its pages.
                self.free_bytes -= carved(e) as u64 * s;
                self.live_bytes += pages * PAGE_SIZE;
                self.free_run(e, pages);
            }
            let mut evacuated: HashSet<u64> = HashSet::new();
            if plan {
                // Lowest spans first; keep spans until their free places hold the live records
                // of all the spans after them.
                let pages = span_pages(c) as u64 * PAGE_SIZE;
                let mine: Vec<u64> = spans
                    .iter()
                    .filter(|sp| sp.1 == c && !empty.contains(&sp.0))
                    .map(|sp| sp.0)
                    .collect();
                let below = mine.partition_point(|&sp| sp + pages <= limit);
                let counts = |sp: u64| {
                    let free = free_in.get(&sp).copied().unwrap_or(0);
                    let pend = pending_in.get(&sp).copied().unwrap_or(0);
                    let uncarved = span_slots(c) - carved(sp);
                    let live = carved(sp).saturating_sub(free + pend);
                    (live as u64, (free + uncarved) as u64)
                };
                let total: u64 = mine.iter().map(|&sp| counts(sp).0).sum();
                let (mut kept_live, mut kept_room) = (0, 0);
                let mut k = 0;
                while k < below && kept_room < total - kept_live {
                    let (l, r) = counts(mine[k]);
                    (kept_live, kept_room) = (kept_live + l, kept_room + r);
                    k += 1;
                }
                evacuated.extend(&mine[k..]);
                if evacuated.contains(&span) {
                    // Its never-used slots become free slots of a span being emptied.
                    for i in next_slot..span_slots(c) {
                        keep.push(span + RUN_HEADER_SIZE + i as u64 * s);
                        self.free_bytes += s;
                    }
                    (span, next_slot) = (0, 0);
                }
                evacuation.spans.extend(evacuated.iter().map(|&sp| (sp, sp + pages)));
            }
            // The stack pops its last entry: kept spans' slots go first, lowest first.
            keep.sort_unstable_by_key(|&o| {
                let gone = span_of(o).is_some_and(|sp| evacuated.contains(&sp.0));
                std::cmp::Reverse((gone, o))
            });
            let mut top = keep;
            let (mut below, mut below_len) = (0, 0);
            self.spill(&mut top, &mut below, &mut below_len)?;
            self.classes[c] = ClassState { top, below, below_len, span, next_slot };
        }
        evacuation.spans.sort_unstable();
        Ok(evacuation)
    }

    /// Compaction: a place for a slab record of `size` bytes outside every span `evac`
    /// empties: a free slot of a kept span, the current span, or a new span from a free run
    /// (never from the end of the file). `None` if there is none.
    pub(crate) fn alloc_evacuate(
        &mut self,
        size: u64,
        evac: &Evacuation,
    ) -> Result<Option<Offset>> {
        let c = class_of(size);
        let s = CLASS_SIZES[c] as u64;
        loop {
            let st = &self.classes[c];
            if st.top.is_empty() && st.below != 0 {
                // Bring the next chunk of free slots up, then look again.
                let o = self.pop_class(c)?.expect("a chunk holds entries");
                self.classes[c].top.push(o);
                continue;
            }
            // The lowest slot of a kept span (frees of this transaction sit unordered on top).
            if let Some((i, &o)) =
                st.top.iter().enumerate().min_by_key(|e| (evac.contains(*e.1), *e.1))
                && !evac.contains(o)
            {
                self.dirty = true;
                self.classes[c].top.swap_remove(i);
                self.free_bytes -= s;
                self.live_bytes += s;
                self.note_fresh(o);
                return Ok(Some(Offset(o)));
            }
            break;
        }
        let st = &self.classes[c];
        let carvable = st.span != 0 && st.next_slot < span_slots(c) && !evac.contains(st.span);
        let pages = span_pages(c) as u64;
        if !carvable && self.find_run(pages).is_none_or(|r| r.0 + pages * PAGE_SIZE > evac.limit) {
            return Ok(None);
        }
        if !carvable {
            self.retire_cursor(c);
        }
        let off = self.carve(c)?;
        self.live_bytes += s;
        self.note_fresh(off);
        self.dirty = true;
        Ok(Some(Offset(off)))
    }

    /// Is a sweep worth its cost? When much of the space is free and enough has become
    /// reusable since the last sweep that its O(runs) walk is paid for.
    pub(crate) fn sweep_due(&self) -> bool {
        let used = self.end - DATA_START;
        self.free_bytes > (used / 4).max(1 << 20) && self.freed_since_sweep > used / 8
    }
}
