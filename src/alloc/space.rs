//! Allocation and freeing: slots of slab spans by size class, runs of pages, the free runs.

use zerocopy::IntoBytes;

use super::Allocator;
use crate::error::Result;
use crate::format::*;

/// Free runs examined in address order before falling back to the best fit.
const FIRST_FIT_SCAN: usize = 16;

impl Allocator {
    /// Allocate a record of `size` bytes (8-aligned offset, 8-aligned size rounding).
    pub(crate) fn alloc(&mut self, size: u64) -> Result<Offset> {
        self.dirty = true;
        if size > MAX_SLAB_SIZE {
            let pages = record_run_pages(size);
            let start = self.alloc_live_run(pages, RUN_RECORD)?;
            return Ok(Offset(start + RUN_HEADER_SIZE));
        }
        let c = class_of(size);
        let s = CLASS_SIZES[c] as u64;
        let off = match self.pop_class(c)? {
            Some(off) => {
                self.free_bytes -= s;
                off
            }
            None => self.carve(c)?,
        };
        self.live_bytes += s;
        self.note_fresh(off);
        Ok(Offset(off))
    }

    pub(super) fn pop_class(&mut self, c: usize) -> Result<Option<u64>> {
        if let Some(off) = self.classes[c].top.pop() {
            return Ok(Some(off));
        }
        let below = self.classes[c].below;
        if below == 0 {
            return Ok(None);
        }
        let (next, entries) = self.read_chunk(below)?;
        for &o in &entries {
            self.check_record(o)?;
        }
        let st = &mut self.classes[c];
        st.below_len = st.below_len.saturating_sub(entries.len() as u64);
        st.below = next;
        st.top = entries;
        self.free_run(below, 1);
        Ok(self.classes[c].top.pop())
    }

    pub(super) fn carve(&mut self, c: usize) -> Result<u64> {
        let s = CLASS_SIZES[c] as u64;
        let st = &self.classes[c];
        if st.span == 0 || st.next_slot >= span_slots(c) {
            let span = self.alloc_run(span_pages(c) as u64, RUN_SLAB, c as u16)?;
            let st = &mut self.classes[c];
            st.span = span;
            st.next_slot = 0;
        }
        let st = &mut self.classes[c];
        let off = st.span + RUN_HEADER_SIZE + st.next_slot as u64 * s;
        st.next_slot += 1;
        Ok(off)
    }

    /// A run of `pages` pages with its header written: best fit among free runs, else the end.
    /// A run holding a record or allocator metadata: counted live, fresh under its start.
    pub(super) fn alloc_live_run(&mut self, pages: u64, kind: u16) -> Result<u64> {
        let start = self.alloc_run(pages, kind, 0)?;
        self.live_bytes += pages * PAGE_SIZE;
        self.note_fresh(start);
        Ok(start)
    }

    fn alloc_run(&mut self, pages: u64, kind: u16, class: u16) -> Result<u64> {
        let start = self.take_pages(pages)?;
        let h = RunHeader::new(kind, class, pages as u32);
        self.pager.write(Offset(start), h.as_bytes())?;
        Ok(start)
    }

    /// Pages for a run: the lowest-addressed fitting free run among the first
    /// [`FIRST_FIT_SCAN`] by address (so the file's tail drains and can be given back), else
    /// the best fit, else the end.
    fn take_pages(&mut self, pages: u64) -> Result<u64> {
        self.dirty = true;
        assert!(pages <= u32::MAX as u64, "run too long");
        if let Some((start, have)) = self.find_run(pages) {
            self.remove_run(start, have);
            if have > pages {
                self.insert_run(start + pages * PAGE_SIZE, have - pages);
            }
            self.free_bytes -= pages * PAGE_SIZE;
            return Ok(start);
        }
        let start = self.end;
        let end = start + pages * PAGE_SIZE;
        self.pager.ensure_len(end)?;
        self.end = end;
        Ok(start)
    }

    /// The free run `take_pages` would cut `pages` from: (start, its pages).
    pub(super) fn find_run(&self, pages: u64) -> Option<(u64, u64)> {
        let low = self.runs.iter().take(FIRST_FIT_SCAN).find(|r| *r.1 >= pages);
        let best =
            || self.runs_by_size.range((pages, 0)..).next().map(|&(have, start)| (start, have));
        low.map(|(&s, &h)| (s, h)).or_else(best)
    }

    pub(super) fn insert_run(&mut self, start: u64, pages: u64) {
        self.runs.insert(start, pages);
        self.runs_by_size.insert((pages, start));
    }

    fn remove_run(&mut self, start: u64, pages: u64) {
        self.runs.remove(&start);
        self.runs_by_size.remove(&(pages, start));
    }

    /// Return a run to the free runs, merging neighbours; a run reaching `end` lowers `end`.
    pub(super) fn add_run(&mut self, mut start: u64, mut pages: u64) {
        if let Some((&ps, &pp)) = self.runs.range(..start).next_back()
            && ps + pp * PAGE_SIZE == start
        {
            self.remove_run(ps, pp);
            start = ps;
            pages += pp;
        }
        let after = start + pages * PAGE_SIZE;
        if let Some(&np) = self.runs.get(&after) {
            self.remove_run(after, np);
            pages += np;
        }
        if start + pages * PAGE_SIZE == self.end {
            self.end = start;
            self.free_bytes -= pages * PAGE_SIZE;
        } else {
            self.insert_run(start, pages);
        }
    }

    /// Free the record of `size` bytes at `off`.
    pub(crate) fn free(&mut self, off: Offset, size: u64) {
        self.dirty = true;
        if size > MAX_SLAB_SIZE {
            self.free_run(off.0 - RUN_HEADER_SIZE, record_run_pages(size));
            return;
        }
        let c = class_of(size);
        let s = CLASS_SIZES[c] as u64;
        // Saturating: a forged file can make a transaction free a record twice, which its
        // commit then refuses (I16); the count must not wrap before that.
        self.live_bytes = self.live_bytes.saturating_sub(s);
        self.free_bytes += s;
        // No commit from now on reaches it: its bytes leave the tracked extents (DESIGN §4.3).
        self.pager.untrack(off.0, s);
        if self.is_fresh(off) {
            self.classes[c].top.push(off.0);
        } else {
            self.defer(Freed::Slot { off: off.0, class: c }, off.0);
        }
    }

    /// Free a run (large record, chunk page or blob) of `pages` pages at `start`.
    pub(super) fn free_run(&mut self, start: u64, pages: u64) {
        self.free_run_as(start, pages, false);
    }

    /// [`Allocator::free_run`]; `unreachable`: no meta slot names what the run holds, nor ever
    /// will (a staged commit's blob, claimed by the commit replacing it), so it is reusable at
    /// once, as a fresh run is.
    pub(super) fn free_run_as(&mut self, start: u64, pages: u64, unreachable: bool) {
        self.dirty = true;
        self.live_bytes = self.live_bytes.saturating_sub(pages * PAGE_SIZE);
        self.free_bytes += pages * PAGE_SIZE;
        self.pager.untrack(start, pages * PAGE_SIZE);
        if unreachable || self.is_fresh(Offset(start)) {
            self.add_run(start, pages);
        } else {
            self.defer(Freed::Run { start, pages }, start);
        }
    }

    pub(super) fn alloc_meta_page(&mut self) -> Result<u64> {
        self.alloc_live_run(1, RUN_META)
    }
}
