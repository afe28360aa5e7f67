//! The allocator blob: the state each commit records (DESIGN §2.7), its parsing with every
//! offset checked, its writing at commit, and the one-phase commit's extents check.

use xxhash_rust::xxh3::Xxh3;
use zerocopy::{FromBytes, IntoBytes};

use super::chain::{INLINE_MAX, read_u64s};
use super::{Allocator, ClassState, Pager, Pending, StagedBlob};
use crate::error::{Result, corrupt};
use crate::format::*;
use crate::storage::View;

/// What a commit records about the allocator in its meta slot.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AllocSummary {
    pub end: u64,
    pub blob: u64,
    pub blob_len: u64,
    pub blob_checksum: u64,
    pub live_bytes: u64,
    pub free_bytes: u64,
    /// The commit wrote its blob and its extents list: it may be made durable with one sync.
    pub one_phase: bool,
    /// Checksum of the extents' bytes (one-phase commits).
    pub data_checksum: u64,
}

/// Whether a one-phase commit's blob and every extent it lists read back as they were written.
/// Bounded work whatever the file holds.
pub(crate) fn verify_one_phase(view: &View, s: &AllocSummary) -> bool {
    let limit = s.end;
    let Some(bytes) = view.slice(s.blob + RUN_HEADER_SIZE, s.blob_len, limit) else {
        return false;
    };
    if s.blob < DATA_START || checksum64(bytes) != s.blob_checksum {
        return false;
    }
    let Ok((h, rest)) = BlobHeader::read_from_prefix(bytes) else { return false };
    let n = h.extent_count.get() as usize;
    if n > MAX_ONE_PHASE_EXTENTS || rest.len() < n * 16 {
        return false;
    }
    let mut hasher = Xxh3::new();
    let mut total = 0u64;
    for e in rest[..n * 16].chunks_exact(16) {
        let Ok(e) = Extent::read_from_bytes(e) else { return false };
        let (off, len) = (e.off.get(), e.len.get());
        total = total.saturating_add(len);
        if off < DATA_START || total > MAX_ONE_PHASE_BYTES {
            return false;
        }
        let Some(data) = view.slice(off, len, limit) else { return false };
        hasher.update(data);
    }
    hasher.digest() == s.data_checksum
}

impl Allocator {
    /// Load the allocator state a commit recorded. Validates everything it reads.
    pub(crate) fn load(pager: Pager, s: &AllocSummary) -> Result<Allocator> {
        let mut a = Allocator::empty(pager);
        if s.end < DATA_START || !s.end.is_multiple_of(PAGE_SIZE) || s.end > a.pager.len() {
            return Err(corrupt(META_OFFSETS[0], "allocator end out of range"));
        }
        a.end = s.end;
        a.floor = s.end;
        // Whatever is allocated at or above the loaded commit's end comes after every commit,
        // the last durable one included.
        a.durable_floor = s.end;
        a.live_bytes = s.live_bytes;
        a.free_bytes = s.free_bytes;
        if s.blob == 0 {
            return Ok(a);
        }
        let hdr = a.run_header(s.blob)?;
        if hdr.kind.get() != RUN_META
            || s.blob_len + RUN_HEADER_SIZE > hdr.pages.get() as u64 * PAGE_SIZE
        {
            return Err(corrupt(s.blob, "allocator blob run mismatch"));
        }
        a.blob = Some((s.blob, hdr.pages.get() as u64));
        a.blob_len = s.blob_len;
        a.blob_checksum = s.blob_checksum;
        let bytes = a.read(Offset(s.blob + RUN_HEADER_SIZE), s.blob_len)?.to_vec();
        if checksum64(&bytes) != s.blob_checksum {
            return Err(corrupt(s.blob, "allocator blob checksum mismatch"));
        }
        a.parse_blob(s.blob, &bytes)?;
        Ok(a)
    }

    fn parse_blob(&mut self, at: u64, bytes: &[u8]) -> Result<()> {
        let bad = || corrupt(at, "allocator blob malformed");
        let (h, mut rest) = BlobHeader::read_from_prefix(bytes).map_err(|_| bad())?;
        if h.class_count.get() as usize > NUM_CLASSES
            || h.extent_count.get() as usize > MAX_ONE_PHASE_EXTENTS
        {
            return Err(corrupt(at, "allocator blob counts"));
        }
        let skip = h.extent_count.get() as usize * size_of::<Extent>();
        rest = rest.get(skip..).ok_or_else(bad)?;
        let mut entries = Vec::with_capacity(h.class_count.get() as usize);
        for _ in 0..h.class_count.get() {
            let (e, r) = ClassEntry::read_from_prefix(rest).map_err(|_| bad())?;
            rest = r;
            entries.push(e);
        }
        for e in &entries {
            let c = e.class.get() as usize;
            if c >= NUM_CLASSES || !self.classes[c].is_empty() {
                return Err(corrupt(at, "allocator blob class index"));
            }
            let (top, r) = read_u64s(rest, e.top_len.get() as usize).ok_or(corrupt(at, "blob"))?;
            rest = r;
            for &o in &top {
                self.check_record(o)?;
            }
            let span = e.span.get();
            if span != 0 {
                self.check_page(span)?;
            }
            if e.next_slot.get() > span_slots(c) {
                return Err(corrupt(at, "allocator blob slot cursor"));
            }
            let below = e.below.get();
            if below != 0 {
                self.check_page(below)?;
            }
            self.classes[c] = ClassState {
                top,
                below,
                below_len: e.below_len.get(),
                span,
                next_slot: e.next_slot.get(),
            };
        }
        for _ in 0..h.run_count.get() {
            let (r, rr) = FreeRun::read_from_prefix(rest).map_err(|_| bad())?;
            rest = rr;
            let (start, pages) = (r.start.get(), r.pages.get());
            self.check_page(start)?;
            if pages == 0
                || pages > (self.end - start) / PAGE_SIZE
                || self.runs.contains_key(&start)
            {
                return Err(corrupt(at, "allocator blob free run"));
            }
            self.insert_run(start, pages);
        }
        for _ in 0..h.pending_count.get() {
            let (p, r) = PendingEntry::read_from_prefix(rest).map_err(|_| bad())?;
            let (inline, r) = read_u64s(r, p.inline.get() as usize).ok_or(corrupt(at, "blob"))?;
            rest = r;
            let txn = TxnId(p.txn.get());
            if p.chain.get() != 0 {
                self.check_page(p.chain.get())?;
            }
            let queue = match p.flags.get() {
                0 => &mut self.pending,
                PENDING_READER_ONLY => &mut self.pending_ro,
                _ => return Err(corrupt(at, "allocator blob pending flags")),
            };
            if queue.back().is_some_and(|b| b.txn >= txn) {
                return Err(corrupt(at, "allocator blob pending order"));
            }
            queue.push_back(Pending {
                txn,
                inline,
                chain: p.chain.get(),
                chained: p.chained.get(),
            });
        }
        if !rest.is_empty() {
            return Err(corrupt(at, "allocator blob trailing bytes"));
        }
        Ok(())
    }

    /// Persist the allocator for commit `txn`; returns what its meta slot records.
    /// `durable`: the last durable commit before this one. `no_reader_since(t)`: no snapshot in
    /// `t..txn` is pinned, so a batch of `t` may merge into this commit's without delaying its
    /// reuse.
    /// `one_phase`: the commit is durable; list its extents in the blob if they are few
    /// enough, so that it may be synced once.
    pub(crate) fn persist(
        &mut self,
        txn: TxnId,
        durable: TxnId,
        one_phase: bool,
        no_reader_since: &dyn Fn(TxnId) -> bool,
    ) -> Result<AllocSummary> {
        let merge_durable = std::mem::replace(&mut self.merge_durable, !one_phase);
        if self.dirty {
            self.write_blob(txn, durable, one_phase, merge_durable, no_reader_since)?;
        }
        Ok(self.summary())
    }

    pub(crate) fn summary(&self) -> AllocSummary {
        AllocSummary {
            end: self.end,
            blob: self.blob.map_or(0, |b| b.0),
            blob_len: self.blob_len,
            blob_checksum: self.blob_checksum,
            live_bytes: self.live_bytes,
            free_bytes: self.free_bytes,
            one_phase: self.one_phase.is_some(),
            data_checksum: self.one_phase.unwrap_or(0),
        }
    }

    fn write_blob(
        &mut self,
        txn: TxnId,
        durable: TxnId,
        one_phase: bool,
        merge_durable: bool,
        no_reader_since: &dyn Fn(TxnId) -> bool,
    ) -> Result<()> {
        // A forged file whose maps share a subtree can make a transaction free one record twice;
        // committing that would hand the record out twice. Refuse (I16). Both lists are sorted
        // in place (their order does not matter), so the check takes no memory; a record lands
        // in the same list whenever it is freed.
        for list in [&mut self.freed_now, &mut self.freed_now_ro] {
            list.sort_unstable();
            if let Some(w) = list.windows(2).find(|w| w[0] == w[1]) {
                let at = Freed::unpack(w[0]).map_or(0, |f| match f {
                    Freed::Slot { off, .. } => off,
                    Freed::Run { start, .. } => start,
                });
                return Err(corrupt(at, "record freed twice: maps share or cycle"));
            }
        }
        // The last commit's blob. Named by a meta slot, it is freed like any record a durable
        // commit may reach. A staged commit's, claimed by this commit (DESIGN §4.3), is no
        // slot's and never will be: reusable at once, but freed only after every allocation
        // below that may grow the file, so that a full disk fails this commit with the staged
        // one still whole (I18); only this commit's own blob may then take its run (after which
        // only a failed write, which poisons the handle, can fail the commit).
        let replaced = self.blob.take();
        let claimed = self.staged_blob == StagedBlob::Claimed;
        if let Some((start, pages)) = replaced
            && !claimed
        {
            self.free_run(start, pages);
        }
        for c in 0..NUM_CLASSES {
            if self.classes[c].top.len() > INLINE_MAX {
                let mut st = std::mem::take(&mut self.classes[c]);
                self.spill(&mut st.top, &mut st.below, &mut st.below_len)?;
                self.classes[c] = st;
            }
        }
        // Batches that no sync can tell apart, with no reader between them, are released
        // together anyway: merging them keeps the blob small under non-durable commits. A
        // durable commit's batch is released by its own sync; merged into later ones, it would
        // wait for theirs, and under a stream of group commits (every sync behind the latest
        // commit) nothing freed would ever be reused.
        let freed = std::mem::take(&mut self.freed_now);
        let merge = |p: &Pending| merge_durable && p.txn > durable && no_reader_since(p.txn);
        self.push_pending(false, freed, txn, &merge)?;
        let freed = std::mem::take(&mut self.freed_now_ro);
        self.push_pending(true, freed, txn, &|p| no_reader_since(p.txn))?;
        if let Some((start, pages)) = replaced
            && claimed
        {
            self.free_run_as(start, pages, true);
        }
        // Taking the blob's pages never adds a free run, so the size computed now is an upper
        // bound of the size serialised after.
        // Writing the blob's run header adds at most one extent.
        let extents_before = if one_phase { self.pager.extents(self.end) } else { None };
        let extra = extents_before.as_ref().map_or(0, |e| (e.len() + 1) * size_of::<Extent>());
        let bound = (self.blob_size(0) + extra) as u64;
        let pages = record_run_pages(bound);
        let start = self.alloc_live_run(pages, RUN_META)?;
        if let Some((old, old_pages)) = replaced
            && claimed
            && start < old + old_pages * PAGE_SIZE
            && old < start + pages * PAGE_SIZE
        {
            self.staged_blob = StagedBlob::Reused;
        }
        let extents = if extents_before.is_some() { self.pager.extents(self.end) } else { None };
        let bytes = self.serialize(extents.as_deref().unwrap_or(&[]));
        debug_assert_eq!(bytes.len(), self.blob_size(extents.as_ref().map_or(0, |e| e.len())));
        debug_assert!(bytes.len() as u64 <= bound);
        self.pager.write(Offset(start + RUN_HEADER_SIZE), &bytes)?;
        // After the last write: an extent may lie under the blob (space freed and reused by
        // this transaction), and its checksum must cover what the file finally holds.
        self.one_phase = match &extents {
            Some(ext) => {
                let mut hasher = Xxh3::new();
                for &(off, len) in ext {
                    hasher.update(self.read(Offset(off), len)?);
                }
                Some(hasher.digest())
            }
            None => None,
        };
        self.blob = Some((start, pages));
        self.blob_len = bytes.len() as u64;
        self.blob_checksum = checksum64(&bytes);
        Ok(())
    }

    /// Size of the blob `serialize` would produce with `extents` extents.
    fn blob_size(&self, extents: usize) -> usize {
        let classes = self.classes.iter().filter(|c| !c.is_empty());
        let pending = self.pending.iter().chain(&self.pending_ro);
        size_of::<BlobHeader>()
            + extents * size_of::<Extent>()
            + classes.map(|c| size_of::<ClassEntry>() + 8 * c.top.len()).sum::<usize>()
            + self.runs.len() * size_of::<FreeRun>()
            + pending.map(|p| size_of::<PendingEntry>() + 8 * p.inline.len()).sum::<usize>()
    }

    fn serialize(&self, extents: &[(u64, u64)]) -> Vec<u8> {
        let used: Vec<usize> = (0..NUM_CLASSES).filter(|&c| !self.classes[c].is_empty()).collect();
        let mut out = Vec::with_capacity(self.blob_size(extents.len()));
        let h = BlobHeader {
            class_count: (used.len() as u32).into(),
            run_count: (self.runs.len() as u32).into(),
            pending_count: ((self.pending.len() + self.pending_ro.len()) as u32).into(),
            extent_count: (extents.len() as u32).into(),
        };
        out.extend_from_slice(h.as_bytes());
        for &(off, len) in extents {
            out.extend_from_slice(Extent { off: off.into(), len: len.into() }.as_bytes());
        }
        for &c in &used {
            let st = &self.classes[c];
            let e = ClassEntry {
                class: (c as u16).into(),
                reserved: 0.into(),
                next_slot: st.next_slot.into(),
                top_len: (st.top.len() as u32).into(),
                reserved2: 0.into(),
                span: st.span.into(),
                below: st.below.into(),
                below_len: st.below_len.into(),
            };
            out.extend_from_slice(e.as_bytes());
        }
        for &c in &used {
            extend_le(&mut out, &self.classes[c].top);
        }
        for (&start, &pages) in &self.runs {
            out.extend_from_slice(FreeRun { start: start.into(), pages: pages.into() }.as_bytes());
        }
        let ro = self.pending_ro.iter().map(|p| (p, PENDING_READER_ONLY));
        for (p, flags) in self.pending.iter().map(|p| (p, 0)).chain(ro) {
            let e = PendingEntry {
                txn: p.txn.0.into(),
                chain: p.chain.into(),
                inline: (p.inline.len() as u32).into(),
                flags: flags.into(),
                chained: p.chained.into(),
            };
            out.extend_from_slice(e.as_bytes());
            extend_le(&mut out, &p.inline);
        }
        out
    }
}

/// Append `words` as little-endian u64s: one copy where that is the machine's order (the
/// blob's lists are most of its bytes, and a copy per word was a tenth of a no-sync commit).
fn extend_le(out: &mut Vec<u8>, words: &[u64]) {
    if cfg!(target_endian = "little") {
        out.extend_from_slice(words.as_bytes());
    } else {
        out.extend(words.iter().flat_map(|w| w.to_le_bytes()));
    }
}
