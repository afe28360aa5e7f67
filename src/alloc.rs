//! The arena allocator: variable-size records at 8-byte-aligned offsets.
//!
//! Records up to [`MAX_SLAB_SIZE`] live in slab spans of one size class; larger ones get a run of
//! pages each. Free space is persistent: each commit writes an allocator blob (spans being
//! carved, the top of each class's free stack, free runs, pending batches) and long free stacks
//! spill into immutable chunk pages. Only a writer ever loads it, lazily, so opening a heap and
//! reading never touch it.
//!
//! Ownership of space (DESIGN.md I3-I5): a record freed by commit T joins a pending batch tagged
//! T and is reused only once no snapshot older than T is pinned and, unless the record was
//! allocated after the last durable commit, T is durable. A record
//! allocated in the running transaction ("fresh") is invisible to everyone else, so it may be
//! rewritten in place and, when freed, reused at once.

use std::collections::hash_map::HashMap;
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use xxhash_rust::xxh3::Xxh3;
use zerocopy::{FromBytes, IntoBytes};

use crate::error::{Result, corrupt};
use crate::format::*;
use crate::storage::{Storage, View};

/// Free-stack entries kept inline in the blob before the bottom ones spill into chunk pages.
const INLINE_MAX: usize = 64;
/// Inline entries left after a spill.
const INLINE_KEEP: usize = 16;
/// A partial chunk page is written only with at least this many entries.
const MIN_PARTIAL: usize = 48;
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
    pub(crate) fn write(&mut self, off: Offset, data: &[u8]) -> Result<()> {
        let res = self.storage.write(off.0, data);
        self.failed |= res.is_err();
        if let Some(t) = &mut self.track {
            let len = data.len() as u64;
            let old = t.insert(off.0, len).unwrap_or(0);
            self.track_bytes = self.track_bytes + len - old.min(self.track_bytes);
            if t.len() > 4 * MAX_ONE_PHASE_EXTENTS || self.track_bytes > MAX_ONE_PHASE_BYTES {
                self.track = None;
            }
        }
        res
    }

    fn start_tracking(&mut self) {
        self.track = Some(BTreeMap::new());
        self.track_bytes = 0;
    }

    /// Forget the writes inside `start..start + len`: the transaction freed that space again, so
    /// a later commit may reuse it and its content is not part of this commit (writes never
    /// straddle a record's bounds).
    fn untrack(&mut self, start: u64, len: u64) {
        if let Some(t) = &mut self.track {
            let inside: Vec<u64> = t.range(start..start + len).map(|(&o, _)| o).collect();
            for o in inside {
                self.track_bytes -= t.remove(&o).unwrap_or(0).min(self.track_bytes);
            }
        }
    }

    /// The ranges written and still in use, coalesced, if still tracked.
    fn extents(&self) -> Option<Vec<(u64, u64)>> {
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
    fn ensure_len(&mut self, end: u64) -> Result<()> {
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

/// Hasher for offsets (already well spread, 8-aligned).
#[derive(Default)]
pub(crate) struct OffsetHasher(u64);
impl Hasher for OffsetHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (v >> 3).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}
pub(crate) type OffsetSet = HashSet<u64, BuildHasherDefault<OffsetHasher>>;

#[derive(Debug, Clone, Default)]
struct ClassState {
    /// Top of the free stack (last = next to pop).
    top: Vec<u64>,
    /// Chain of chunk pages below `top`.
    below: u64,
    below_len: u64,
    /// Span being carved and its next never-used slot.
    span: u64,
    next_slot: u32,
}

impl ClassState {
    fn is_empty(&self) -> bool {
        self.top.is_empty() && self.below == 0 && self.span == 0
    }
}

/// Records freed by commit `txn` (or by several commits up to `txn`, merged), in the same
/// inline-top-plus-chain shape as a free stack.
#[derive(Debug, Clone)]
struct Pending {
    txn: TxnId,
    inline: Vec<u64>,
    chain: u64,
    chained: u64,
}

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

/// Free runs examined in address order before falling back to the best fit.
const FIRST_FIT_SCAN: usize = 16;

/// The writer's view of space. Loaded from a commit's blob; mutated by one write transaction at
/// a time; discarded on abort (the next writer reloads from the last commit).
#[derive(Debug)]
pub(crate) struct Allocator {
    pub(crate) pager: Pager,
    end: u64,
    classes: Vec<ClassState>,
    runs: BTreeMap<u64, u64>,
    runs_by_size: BTreeSet<(u64, u64)>,
    /// Batches held back by readers and by the last durable commit, oldest first.
    pending: VecDeque<Pending>,
    /// Batches of records allocated after the last durable commit: only readers hold them.
    pending_ro: VecDeque<Pending>,
    /// The blob run of the last commit: (start, pages).
    blob: Option<(u64, u64)>,
    blob_len: u64,
    blob_checksum: u64,
    live_bytes: u64,
    free_bytes: u64,
    /// Per transaction: `end` when it began; everything at or above was allocated by it.
    floor: u64,
    /// Per transaction: objects allocated below `floor` (reused space).
    fresh: OffsetSet,
    /// Per transaction: records freed that an older snapshot or the durable commit may see.
    freed_now: Vec<u64>,
    /// Per transaction: records freed that only older snapshots may see.
    freed_now_ro: Vec<u64>,
    /// `end` at the last durable commit, or at load time if later. Everything at or above it
    /// was allocated after the last durable commit.
    durable_floor: u64,
    /// Records below `durable_floor` allocated after the last durable commit (in memory only:
    /// after a reload every pending record is treated as durability-bound, which is safe).
    since_durable: OffsetSet,
    /// Per transaction: anything changed (if not, the commit keeps the old blob).
    dirty: bool,
    /// Per transaction: the blob written lists its extents, checksummed so.
    one_phase: Option<u64>,
    /// Bytes made reusable (released) since the last sweep (in memory only; a reload starts
    /// at zero).
    freed_since_sweep: u64,
}

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
    /// The allocator of an empty heap.
    pub(crate) fn empty(pager: Pager) -> Allocator {
        Allocator {
            pager,
            end: DATA_START,
            classes: vec![ClassState::default(); NUM_CLASSES],
            runs: BTreeMap::new(),
            runs_by_size: BTreeSet::new(),
            pending: VecDeque::new(),
            pending_ro: VecDeque::new(),
            blob: None,
            blob_len: 0,
            blob_checksum: 0,
            live_bytes: 0,
            free_bytes: 0,
            floor: DATA_START,
            fresh: OffsetSet::default(),
            freed_now: Vec::new(),
            freed_now_ro: Vec::new(),
            durable_floor: u64::MAX,
            since_durable: OffsetSet::default(),
            dirty: false,
            one_phase: None,
            freed_since_sweep: 0,
        }
    }

    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Bytes of `len` at `off`, below the current high-water mark.
    pub(crate) fn read(&self, off: u64, len: u64) -> Result<&[u8]> {
        self.pager.view.slice(off, len, self.end).ok_or_else(|| corrupt(off, "range past the end"))
    }

    /// Load the allocator state a commit recorded. Validates everything it reads.
    pub(crate) fn load(pager: Pager, s: &AllocSummary) -> Result<Allocator> {
        let mut a = Allocator::empty(pager);
        if s.end < DATA_START || !s.end.is_multiple_of(PAGE_SIZE) || s.end > a.pager.storage.len() {
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
        let bytes = a.read(s.blob + RUN_HEADER_SIZE, s.blob_len)?.to_vec();
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

    /// Validate and decode a pending batch's packed entries.
    fn decode_freed(&self, entries: &[u64]) -> Result<Vec<Freed>> {
        entries
            .iter()
            .map(|&e| {
                let f = Freed::unpack(e).ok_or_else(|| corrupt(e, "pending entry"))?;
                match f {
                    Freed::Slot { off, .. } => self.check_record(off)?,
                    Freed::Run { start, pages } => {
                        self.check_page(start)?;
                        if pages == 0 || pages > (self.end - start) / PAGE_SIZE {
                            return Err(corrupt(start, "pending run length"));
                        }
                    }
                }
                Ok(f)
            })
            .collect()
    }

    /// Bytes of each pending batch (freed, not yet reusable), with the commit that freed it.
    pub(crate) fn pending_bytes(&self) -> Result<Vec<(TxnId, u64)>> {
        let mut out = Vec::new();
        for p in self.pending.iter().chain(&self.pending_ro) {
            let mut entries = p.inline.clone();
            for (_, more) in self.read_chain(p.chain)? {
                entries.extend_from_slice(&more);
            }
            let freed = self.decode_freed(&entries)?;
            let bytes = freed.iter().map(|f| match *f {
                Freed::Slot { class, .. } => CLASS_SIZES[class] as u64,
                Freed::Run { pages, .. } => pages * PAGE_SIZE,
            });
            out.push((p.txn, bytes.sum()));
        }
        Ok(out)
    }

    fn check_record(&self, o: u64) -> Result<()> {
        if o < DATA_START || !o.is_multiple_of(8) || o >= self.end {
            return Err(corrupt(o, "free record offset out of range"));
        }
        Ok(())
    }

    fn check_page(&self, o: u64) -> Result<()> {
        if o < DATA_START || !o.is_multiple_of(PAGE_SIZE) || o >= self.end {
            return Err(corrupt(o, "page offset out of range"));
        }
        Ok(())
    }

    pub(crate) fn run_header(&self, start: u64) -> Result<RunHeader> {
        self.check_page(start)?;
        let h = RunHeader::read_from_bytes(self.read(start, RUN_HEADER_SIZE)?)
            .map_err(|_| corrupt(start, "run header"))?;
        if !h.is_valid()
            || h.pages.get() == 0
            || h.pages.get() as u64 > (self.end - start) / PAGE_SIZE
        {
            return Err(corrupt(start, "invalid run header"));
        }
        Ok(h)
    }

    /// Entries and successor of the chunk page at `off`.
    pub(crate) fn read_chunk(&self, off: u64) -> Result<(u64, Vec<u64>)> {
        let h = self.run_header(off)?;
        if h.kind.get() != RUN_META || h.pages.get() != 1 {
            return Err(corrupt(off, "chunk is not a one-page metadata run"));
        }
        let body = self.read(off + RUN_HEADER_SIZE, PAGE_SIZE - RUN_HEADER_SIZE)?;
        let (ch, rest) =
            ChunkHeader::read_from_prefix(body).map_err(|_| corrupt(off, "chunk header"))?;
        let n = ch.count.get() as usize;
        if n == 0 || n > CHUNK_CAPACITY {
            return Err(corrupt(off, "chunk count"));
        }
        let (entries, _) = read_u64s(rest, n).ok_or(corrupt(off, "chunk"))?;
        if chunk_checksum(ch.next.get(), &entries) != ch.checksum.get() {
            return Err(corrupt(off, "chunk checksum mismatch"));
        }
        let next = ch.next.get();
        if next != 0 {
            self.check_page(next)?;
        }
        Ok((next, entries))
    }

    /// Every chunk of the chain starting at `head`: (page, entries). Bounded by the number of
    /// pages below `end` whatever the file says, so a cycle is an error, not a hang (I9).
    pub(crate) fn read_chain(&self, head: u64) -> Result<Vec<(u64, Vec<u64>)>> {
        let max = (self.end - DATA_START) / PAGE_SIZE;
        let mut out = Vec::new();
        let mut chain = head;
        while chain != 0 {
            if out.len() as u64 >= max {
                return Err(corrupt(chain, "chunk chain longer than the file allows"));
            }
            let (next, entries) = self.read_chunk(chain)?;
            out.push((chain, entries));
            chain = next;
        }
        Ok(out)
    }

    // -----------------------------------------------------------------------------------------
    // Transactions

    /// Start a write transaction. Batches up to `readers` (the oldest pinned snapshot, or the
    /// latest commit) are released if reader-only; durability-bound ones up to `durable` (the
    /// older of that and the last durable commit).
    pub(crate) fn begin_txn(&mut self, readers: TxnId, durable: TxnId) -> Result<()> {
        self.fresh.clear();
        self.freed_now.clear();
        self.freed_now_ro.clear();
        self.dirty = false;
        self.one_phase = None;
        self.pager.start_tracking();
        self.floor = self.end;
        while self.pending.front().is_some_and(|p| p.txn <= durable) {
            let p = self.pending.pop_front().expect("checked");
            self.release(p)?;
        }
        while self.pending_ro.front().is_some_and(|p| p.txn <= readers) {
            let p = self.pending_ro.pop_front().expect("checked");
            self.release(p)?;
        }
        if self.sweep_due() {
            self.sweep()?;
        }
        // Space released above may have lowered `end`: bump allocations there are fresh too.
        self.floor = self.end;
        Ok(())
    }

    /// Make a pending batch's records free.
    fn release(&mut self, p: Pending) -> Result<()> {
        self.dirty = true;
        let mut entries = p.inline;
        for (page, more) in self.read_chain(p.chain)? {
            entries.extend_from_slice(&more);
            self.free_run(page, 1);
        }
        for freed in self.decode_freed(&entries)? {
            match freed {
                Freed::Slot { off, class } => {
                    self.freed_since_sweep += CLASS_SIZES[class] as u64;
                    self.classes[class].top.push(off)
                }
                Freed::Run { start, pages } => {
                    self.freed_since_sweep += pages * PAGE_SIZE;
                    self.add_run(start, pages)
                }
            }
        }
        Ok(())
    }

    /// Was `off` allocated by the running transaction?
    #[inline]
    pub(crate) fn is_fresh(&self, off: u64) -> bool {
        off >= self.floor || self.fresh.contains(&off)
    }

    /// Record that `off` was just allocated.
    fn note_fresh(&mut self, off: u64) {
        if off < self.floor {
            self.fresh.insert(off);
        }
        if off < self.durable_floor {
            self.since_durable.insert(off);
        }
    }

    /// Queue a record freed by this transaction: reader-only if allocated after the last
    /// durable commit (`at` is the address it was allocated under).
    fn defer(&mut self, f: Freed, at: u64) {
        if at >= self.durable_floor || self.since_durable.contains(&at) {
            self.freed_now_ro.push(f.pack());
        } else {
            self.freed_now.push(f.pack());
        }
    }

    /// The running transaction committed.
    pub(crate) fn committed(&mut self, durable: bool) {
        if durable {
            self.since_durable.clear();
            self.durable_floor = self.end;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Allocation

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

    fn pop_class(&mut self, c: usize) -> Result<Option<u64>> {
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

    fn carve(&mut self, c: usize) -> Result<u64> {
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
    fn alloc_live_run(&mut self, pages: u64, kind: u16) -> Result<u64> {
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
    fn find_run(&self, pages: u64) -> Option<(u64, u64)> {
        let low = self.runs.iter().take(FIRST_FIT_SCAN).find(|r| *r.1 >= pages);
        let best =
            || self.runs_by_size.range((pages, 0)..).next().map(|&(have, start)| (start, have));
        low.map(|(&s, &h)| (s, h)).or_else(best)
    }

    fn insert_run(&mut self, start: u64, pages: u64) {
        self.runs.insert(start, pages);
        self.runs_by_size.insert((pages, start));
    }

    fn remove_run(&mut self, start: u64, pages: u64) {
        self.runs.remove(&start);
        self.runs_by_size.remove(&(pages, start));
    }

    /// Return a run to the free runs, merging neighbours; a run reaching `end` lowers `end`.
    fn add_run(&mut self, mut start: u64, mut pages: u64) {
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

    /// Compaction: a run for a record of `size` bytes (larger than a slab record) if the free
    /// run it would get lies below `limit`; `None` changes nothing.
    pub(crate) fn alloc_below(&mut self, size: u64, limit: u64) -> Result<Option<Offset>> {
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

    // -----------------------------------------------------------------------------------------
    // Sweeping: empty spans back to free runs

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
            let mut entries = p.inline.clone();
            for (_, more) in self.read_chain(p.chain)? {
                entries.extend_from_slice(&more);
            }
            for f in self.decode_freed(&entries)? {
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

    // -----------------------------------------------------------------------------------------
    // Freeing

    /// Free the record of `size` bytes at `off`.
    pub(crate) fn free(&mut self, off: Offset, size: u64) {
        self.dirty = true;
        if size > MAX_SLAB_SIZE {
            self.free_run(off.0 - RUN_HEADER_SIZE, record_run_pages(size));
            return;
        }
        let c = class_of(size);
        let s = CLASS_SIZES[c] as u64;
        self.live_bytes -= s;
        self.free_bytes += s;
        if self.is_fresh(off.0) {
            self.pager.untrack(off.0, s);
            self.classes[c].top.push(off.0);
        } else {
            self.defer(Freed::Slot { off: off.0, class: c }, off.0);
        }
    }

    /// Free a run (large record, chunk page or blob) of `pages` pages at `start`.
    fn free_run(&mut self, start: u64, pages: u64) {
        self.dirty = true;
        self.live_bytes -= pages * PAGE_SIZE;
        self.free_bytes += pages * PAGE_SIZE;
        if self.is_fresh(start) {
            self.pager.untrack(start, pages * PAGE_SIZE);
            self.add_run(start, pages);
        } else {
            self.defer(Freed::Run { start, pages }, start);
        }
    }

    fn alloc_meta_page(&mut self) -> Result<u64> {
        self.alloc_live_run(1, RUN_META)
    }

    /// Write `entries` as a chain of chunk pages ending in `next`; returns the chain's head.
    fn write_chain(&mut self, entries: &[u64], mut next: u64) -> Result<u64> {
        for part in entries.chunks(CHUNK_CAPACITY) {
            let page = self.alloc_meta_page()?;
            let mut buf = Vec::with_capacity(CHUNK_HEADER_SIZE as usize + part.len() * 8);
            let ch = ChunkHeader {
                next: next.into(),
                count: (part.len() as u32).into(),
                checksum: chunk_checksum(next, part).into(),
            };
            buf.extend_from_slice(ch.as_bytes());
            for e in part {
                buf.extend_from_slice(&e.to_le_bytes());
            }
            self.pager.write(Offset(page + RUN_HEADER_SIZE), &buf)?;
            next = page;
        }
        Ok(next)
    }

    // -----------------------------------------------------------------------------------------
    // Commit

    /// Persist the allocator for commit `txn`; returns what its meta slot records.
    /// `durable`: the last durable commit before this one. `no_reader_since(t)`: no snapshot in
    /// `t..txn` is pinned, so a batch of `t` may merge into this commit's without delaying its
    /// reuse.
    /// `one_phase`: list the commit's extents in the blob if they are few enough, so that it
    /// may be synced once.
    pub(crate) fn persist(
        &mut self,
        txn: TxnId,
        durable: TxnId,
        one_phase: bool,
        no_reader_since: &dyn Fn(TxnId) -> bool,
    ) -> Result<AllocSummary> {
        if self.dirty {
            self.write_blob(txn, durable, one_phase, no_reader_since)?;
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

    /// Move all but the newest entries of a long stack top into chunk pages below it.
    fn spill(&mut self, top: &mut Vec<u64>, below: &mut u64, below_len: &mut u64) -> Result<()> {
        let n = top.len();
        if n <= INLINE_MAX {
            return Ok(());
        }
        let excess = n - INLINE_KEEP;
        let rem = excess % CHUNK_CAPACITY;
        let count = excess - rem + if rem >= MIN_PARTIAL { rem } else { 0 };
        let moved: Vec<u64> = top.drain(..count).collect();
        *below = self.write_chain(&moved, *below)?;
        *below_len += count as u64;
        Ok(())
    }

    /// Add this commit's freed entries to `queue` (merging into its newest batch when `merge`
    /// says that delays nothing), spilling a long inline part into chunk pages.
    fn push_pending(
        &mut self,
        ro: bool,
        entries: Vec<u64>,
        txn: TxnId,
        merge: &dyn Fn(&Pending) -> bool,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let queue = if ro { &mut self.pending_ro } else { &mut self.pending };
        let mut p = match queue.pop_back() {
            Some(back) if merge(&back) => back,
            Some(back) => {
                queue.push_back(back);
                Pending { txn, inline: Vec::new(), chain: 0, chained: 0 }
            }
            None => Pending { txn, inline: Vec::new(), chain: 0, chained: 0 },
        };
        p.txn = txn;
        p.inline.extend(entries);
        let (mut chain, mut chained) = (p.chain, p.chained);
        self.spill(&mut p.inline, &mut chain, &mut chained)?;
        (p.chain, p.chained) = (chain, chained);
        if ro { &mut self.pending_ro } else { &mut self.pending }.push_back(p);
        Ok(())
    }

    fn write_blob(
        &mut self,
        txn: TxnId,
        durable: TxnId,
        one_phase: bool,
        no_reader_since: &dyn Fn(TxnId) -> bool,
    ) -> Result<()> {
        if let Some((start, pages)) = self.blob.take() {
            self.free_run(start, pages);
        }
        for c in 0..NUM_CLASSES {
            if self.classes[c].top.len() > INLINE_MAX {
                let mut st = std::mem::take(&mut self.classes[c]);
                self.spill(&mut st.top, &mut st.below, &mut st.below_len)?;
                self.classes[c] = st;
            }
        }
        // Batches behind the same durable commit with no reader between them are released
        // together anyway: merging them keeps the blob small under non-durable commits.
        let freed = std::mem::take(&mut self.freed_now);
        self.push_pending(false, freed, txn, &|p| p.txn > durable && no_reader_since(p.txn))?;
        let freed = std::mem::take(&mut self.freed_now_ro);
        self.push_pending(true, freed, txn, &|p| no_reader_since(p.txn))?;
        // Taking the blob's pages never adds a free run, so the size computed now is an upper
        // bound of the size serialised after.
        // Writing the blob's run header adds at most one extent.
        let extents_before = if one_phase { self.pager.extents() } else { None };
        let extra = extents_before.as_ref().map_or(0, |e| (e.len() + 1) * size_of::<Extent>());
        let bound = (self.blob_size(0) + extra) as u64;
        let pages = record_run_pages(bound);
        let start = self.alloc_live_run(pages, RUN_META)?;
        let extents = if extents_before.is_some() { self.pager.extents() } else { None };
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
                    hasher.update(self.read(off, len)?);
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
            for o in &self.classes[c].top {
                out.extend_from_slice(&o.to_le_bytes());
            }
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
            for v in &p.inline {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    // -----------------------------------------------------------------------------------------
    // Inspection (integrity walk)

    /// Every free or pending extent and every metadata run, for the integrity walk:
    /// (offset, length, what). Also returns the slab cursors (span, next_slot) per class.
    pub(crate) fn inventory(&self) -> Result<Inventory> {
        let mut inv = Inventory::default();
        if let Some((start, pages)) = self.blob {
            inv.meta_runs.push((start, pages));
        }
        for (c, st) in self.classes.iter().enumerate() {
            let s = CLASS_SIZES[c] as u64;
            for &o in &st.top {
                inv.free.push((o, s));
            }
            let mut seen = 0u64;
            for (page, entries) in self.read_chain(st.below)? {
                inv.meta_runs.push((page, 1));
                seen += entries.len() as u64;
                inv.free.extend(entries.into_iter().map(|o| (o, s)));
            }
            if seen != st.below_len {
                return Err(corrupt(st.below, "free chain shorter than recorded"));
            }
            if st.span != 0 {
                inv.cursors.insert(st.span, st.next_slot);
            }
        }
        for (&start, &pages) in &self.runs {
            inv.free_runs.push((start, pages));
        }
        for p in self.pending.iter().chain(&self.pending_ro) {
            let mut entries = p.inline.clone();
            for (page, more) in self.read_chain(p.chain)? {
                inv.meta_runs.push((page, 1));
                entries.extend(more);
            }
            if entries.len() as u64 != p.chained + p.inline.len() as u64 {
                return Err(corrupt(p.chain, "pending chain length differs from the record"));
            }
            for freed in self.decode_freed(&entries)? {
                match freed {
                    Freed::Slot { off, class } => inv.free.push((off, CLASS_SIZES[class] as u64)),
                    Freed::Run { start, pages } => inv.pending_runs.push((start, pages)),
                }
            }
        }
        inv.end = self.end;
        inv.live_bytes = self.live_bytes;
        inv.free_bytes = self.free_bytes;
        Ok(inv)
    }
}

/// What the allocator knows about space, for the integrity walk.
#[derive(Debug, Default)]
pub(crate) struct Inventory {
    /// Free or pending slab slots: (offset, slot size).
    pub free: Vec<(u64, u64)>,
    /// Free runs: (start, pages).
    pub free_runs: Vec<(u64, u64)>,
    /// Runs freed but pending: (start, pages).
    pub pending_runs: Vec<(u64, u64)>,
    /// Allocator metadata runs in use: (start, pages).
    pub meta_runs: Vec<(u64, u64)>,
    /// Span being carved -> next never-used slot.
    pub cursors: HashMap<u64, u32>,
    pub end: u64,
    pub live_bytes: u64,
    pub free_bytes: u64,
}

fn read_u64s(bytes: &[u8], n: usize) -> Option<(Vec<u64>, &[u8])> {
    let need = n.checked_mul(8)?;
    if bytes.len() < need {
        return None;
    }
    let (a, rest) = bytes.split_at(need);
    Some((a.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8"))).collect(), rest))
}

fn chunk_checksum(next: u64, entries: &[u64]) -> u32 {
    let mut buf = Vec::with_capacity(12 + entries.len() * 8);
    buf.extend_from_slice(&next.to_le_bytes());
    buf.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        buf.extend_from_slice(&e.to_le_bytes());
    }
    checksum64(&buf) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::mem::MemStorage;

    #[test]
    fn a_cyclic_chunk_chain_is_an_error_not_a_hang() {
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new(64 << 20));
        storage.grow(DATA_START).unwrap();
        let mut a = Allocator::empty(Pager::new(storage));
        a.begin_txn(TxnId(0), TxnId(0)).unwrap();
        let page = a.alloc_meta_page().unwrap();
        // One entry, pointing back at itself, as a hostile file could.
        let entries = [DATA_START + 64];
        let ch = ChunkHeader {
            next: page.into(),
            count: 1.into(),
            checksum: chunk_checksum(page, &entries).into(),
        };
        let mut body = ch.as_bytes().to_vec();
        body.extend_from_slice(&entries[0].to_le_bytes());
        a.pager.write(Offset(page + RUN_HEADER_SIZE), &body).unwrap();
        assert!(matches!(a.read_chain(page), Err(crate::Error::Corrupt { .. })));
        a.classes[0].below = page;
        a.classes[0].below_len = u64::MAX;
        assert!(a.inventory().is_err());
        // An empty chunk is never written: refused.
        let empty = ChunkHeader {
            next: 0.into(),
            count: 0.into(),
            checksum: chunk_checksum(0, &[]).into(),
        };
        a.pager.write(Offset(page + RUN_HEADER_SIZE), empty.as_bytes()).unwrap();
        assert!(a.read_chunk(page).is_err());
    }
}
