//! Access advice for the heap's mapping (DESIGN §4.6a): what the kernel is told to read ahead,
//! and when.
//!
//! - The mapping starts `MADV_RANDOM`: a cold open and its first lookups fault only the pages
//!   they touch (the default read-around, 8 MiB on the development disk, made a cold open read
//!   megabytes for its four pages).
//! - After [`READS_BEFORE_WARM_UP`] node reads through one open file (about 60 lookups), the
//!   process is doing more than a few lookups: if the file fits in half the memory this process
//!   may use and is not already mostly in memory, a thread reads it all in (`MADV_WILLNEED` in
//!   the largest requests the device takes) while the lookups go on, each faulting only what it
//!   touches until the warm-up has brought it; the warm-up is paced and at idle I/O priority,
//!   so a lookup's own reads wait behind a few megabytes at most. A heap bigger than that is
//!   left alone: reading it all would evict what it reads before it is used. (Measured, and
//!   rejected: switching the mapping to `MADV_NORMAL` instead made each cold fault wait for
//!   8 MiB around it.)
//! - A part (an array, a long value) is read whole: when one of 64 KiB or more is handed out and
//!   its first page is not in memory, a short one is asked for in one request
//!   (`MADV_WILLNEED`), and a long one's pages are advised `MADV_NORMAL`: the kernel's readahead
//!   then follows the reader, in large folios, a window ahead (a part bigger than memory streams
//!   too). A warm part costs one `mincore`. (Measured on a 1 GiB array: `MADV_SEQUENTIAL` on the
//!   range streamed at a third of the speed, and `MADV_WILLNEED` of the whole range, from a
//!   background thread, at two thirds: its pages come in one at a time.)
//! - A file that is never written (a sealed heap) is read in whole on request (a prefetch) by
//!   faults on a second mapping advised `MADV_HUGEPAGE`: the kernel then reads 2 MiB at a time
//!   into 2 MiB folios, and every process maps them with one page-table entry each (fewer faults,
//!   fewer TLB misses). A file someone writes keeps small folios: a store dirties its whole
//!   folio, and a sync would write 2 MiB for it.

#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use memmap2::{Advice, MmapRaw, UncheckedAdvice};

/// Node reads through one open file before it is considered for a warm-up.
pub(crate) const READS_BEFORE_WARM_UP: u32 = 256;

/// Parts at least this long are advised when read.
pub(crate) const PART_ADVICE_MIN: u64 = 64 << 10;

/// Parts at least this long are read through the kernel's readahead; shorter ones are asked for
/// in one request of exactly their length (readahead would read megabytes around them).
const SEQUENTIAL_MIN: u64 = 2 << 20;

/// At most this many ranges of one mapping carry their own advice (each splits the mapping's
/// kernel area in up to three, and a process may have only so many: 65,530 by default); the
/// oldest goes back to random when another comes.
const SEQUENTIAL_RANGES: usize = 16;

/// The warm-up's window: what it asks for ahead of what it waits for.
const WARM_UP_WINDOW: u64 = 2 << 20;

/// The largest `MADV_WILLNEED` request made.
const MAX_STEP: u64 = 2 << 20;

/// The advice state of one open file, shared by all its mappings.
#[derive(Debug, Default)]
pub(crate) struct AccessPolicy {
    /// Node reads so far, counted up to [`READS_BEFORE_WARM_UP`] (the warm-up is decided by
    /// the read that reaches it).
    reads: AtomicU32,
    /// A warm-up was started.
    warming: AtomicBool,
    /// The file's length, as the storage last knew it.
    len: AtomicU64,
    /// The file's device, and the largest request it reads whole (found when first needed).
    dev: u64,
    step: OnceLock<u64>,
    /// A file never written ([`AccessPolicy::read_in_large_folios`]), and, made at its first
    /// whole-file read-in, a read-only mapping of all of it advised `MADV_HUGEPAGE` through
    /// which such read-ins go (`None` where the kernel refused the mapping or the advice).
    sealed: OnceLock<Arc<std::fs::File>>,
    large: OnceLock<Option<MmapRaw>>,
}

impl AccessPolicy {
    pub(crate) fn new(len: u64, dev: u64) -> AccessPolicy {
        AccessPolicy { len: AtomicU64::new(len), dev, ..AccessPolicy::default() }
    }

    /// The file is now `len` long.
    pub(crate) fn set_len(&self, len: u64) {
        self.len.store(len, Ordering::Relaxed);
    }

    /// `file` will never be written (a sealed heap): whole-file read-ins go through a second,
    /// read-only mapping of it advised `MADV_HUGEPAGE` (and random, so that each fault reads
    /// its own 2 MiB and no more), made when the first one starts (opening maps nothing more).
    pub(crate) fn read_in_large_folios(&self, file: Arc<std::fs::File>) {
        let _ = self.sealed.set(file);
    }

    /// The large-folio mapping, made at the first call; `None` for a file that is written, or
    /// where the kernel refuses the mapping or the advice (read-ins then stay as they were).
    fn large(&self) -> Option<&MmapRaw> {
        let file = self.sealed.get()?;
        self.large
            .get_or_init(|| {
                let len = self.len.load(Ordering::Relaxed) as usize;
                let map = memmap2::MmapOptions::new().len(len).map_raw_read_only(&**file).ok()?;
                (map.advise(Advice::Random).is_ok() && map.advise(Advice::HugePage).is_ok())
                    .then_some(map)
            })
            .as_ref()
    }

    /// Bring `[off, off + len)` of `map` (below `file_len`) into memory and map it, waiting:
    /// `MADV_WILLNEED` on it and as much again after it (queued, not waited for: the next call's
    /// range is already on its way, and the random-advised mapping would otherwise fault a page
    /// at a time), then `MADV_POPULATE_READ` on it.
    pub(crate) fn read_in(&self, map: &MmapRaw, off: u64, len: u64, file_len: u64) {
        let (ahead, end) = ((off + 2 * len).min(file_len), (off + len).min(file_len));
        if off < end {
            self.will_need(map, off, ahead - off);
            populate(map, off, end - off);
        }
    }

    /// As [`AccessPolicy::read_in`], for a read-in of the whole file asked for by the user
    /// (`Heap::prefetch`): where the file is never written, by faults on the large-folio
    /// mapping instead, 2 MiB each, one after another, then unmapped from it (nothing is
    /// mapped in `map`: its lookups map each 2 MiB folio with one entry when they first touch
    /// it). Not for the warm-up, whose lookups run meanwhile: a page a lookup faults in alone
    /// takes a small folio, and a 2 MiB read around it falls back to small folios too, read one
    /// fault at a time (measured: the warm-up slower by half, and almost nothing in large
    /// folios).
    pub(crate) fn read_in_whole(&self, map: &MmapRaw, off: u64, len: u64, file_len: u64) {
        match self.large() {
            Some(large) => {
                let end = (off + len).min(file_len).min(large.len() as u64);
                if off < end {
                    populate(large, off, end - off);
                    // Then unmapped from this mapping (the page cache keeps the folios): the
                    // process's resident size does not count the file twice.
                    let start = off & !(page_size() - 1);
                    // SAFETY: `large` is a read-only shared mapping of the file that nothing
                    // reads through (no reference into it exists); MADV_DONTNEED only removes
                    // its page-table entries, and a later fault would read the same file bytes.
                    let _ = unsafe {
                        large.unchecked_advise_range(
                            UncheckedAdvice::DontNeed,
                            start as usize,
                            (end - start) as usize,
                        )
                    };
                }
            }
            None => self.read_in(map, off, len, file_len),
        }
    }

    /// `MADV_WILLNEED` on `[off, off + len)` of `map` (a mapping of this file), in requests the
    /// kernel reads whole (it caps each at the device's readahead size). Returns once the reads
    /// are queued, without waiting for them.
    pub(crate) fn will_need(&self, map: &MmapRaw, off: u64, len: u64) {
        let step = *self.step.get_or_init(|| readahead_step(self.dev));
        let end = (off + len).min(map.len() as u64);
        let mut at = off & !(page_size() - 1);
        while at < end {
            let n = step.min(end - at);
            let _ = map.advise_range(Advice::WillNeed, at as usize, n as usize);
            at += n;
        }
    }
}

/// What a [`super::View`] of a file mapping advises through: the mapping (kept alive for a
/// warm-up) and the file's policy.
#[derive(Debug)]
pub(crate) struct Advisor {
    map: Arc<MmapRaw>,
    policy: Arc<AccessPolicy>,
    /// The page ranges advised `MADV_NORMAL`, oldest first.
    advised: Mutex<VecDeque<(u64, u64)>>,
}

impl Advisor {
    pub(crate) fn new(map: Arc<MmapRaw>, policy: Arc<AccessPolicy>) -> Arc<Advisor> {
        Arc::new(Advisor { map, policy, advised: Mutex::new(VecDeque::new()) })
    }

    /// A node was read: the policy settles after [`READS_BEFORE_WARM_UP`] of them. After that,
    /// one relaxed load.
    #[inline]
    pub(crate) fn note_read(&self) {
        if self.policy.reads.load(Ordering::Relaxed) < READS_BEFORE_WARM_UP {
            self.count_read();
        }
    }

    #[cold]
    fn count_read(&self) {
        if self.policy.reads.fetch_add(1, Ordering::Relaxed) + 1 == READS_BEFORE_WARM_UP {
            self.warm_up();
        }
    }

    /// Read the whole file in, from a thread of its own, if it fits in half the memory this
    /// process may use and is not already mostly in memory (64 pages sampled). Once per file.
    fn warm_up(&self) {
        let len = self.policy.len.load(Ordering::Relaxed);
        if len > memory_limit() / 2 || self.policy.warming.swap(true, Ordering::Relaxed) {
            return;
        }
        let samples = 64;
        let within = len.min(self.map.len() as u64);
        let resident = (0..samples).filter(|i| self.resident(within / samples * i)).count();
        if resident * 10 >= samples as usize * 9 {
            return;
        }
        let (map, policy) = (self.map.clone(), self.policy.clone());
        // Paced: a window asked for ahead of the one waited for, so that no more than two
        // windows of reads are queued before a lookup's own (a queue of the whole file made a
        // lookup wait 0.1-0.3 s); at idle I/O priority, so that a lookup's reads go first where
        // the scheduler honours it. The file may shrink meanwhile: populating past its end is
        // an error returned (`EFAULT`), not a signal. If no thread can start, the lookups fault
        // in what they touch, as before.
        let _ = std::thread::Builder::new().name("pheap-warm-up".into()).spawn(move || {
            // SAFETY: ioprio_set only reads its integer arguments (this thread, idle class).
            unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, 3 << 13) };
            for at in (0..len).step_by(WARM_UP_WINDOW as usize) {
                policy.read_in(&map, at, WARM_UP_WINDOW, len);
            }
        });
    }

    /// `[off, off + len)` (inside the mapping, at least [`PART_ADVICE_MIN`] long) is about to
    /// be read whole.
    pub(crate) fn will_read(&self, off: u64, len: u64) {
        if self.resident(off) {
            return;
        }
        if len < SEQUENTIAL_MIN {
            // One request for exactly the part.
            self.policy.will_need(&self.map, off, len);
            return;
        }
        // The kernel's own readahead, which follows the reader, in large folios, and never
        // gets more than its window ahead (a part bigger than memory streams too).
        let start = off & !(page_size() - 1);
        let end = (off + len).next_multiple_of(page_size()).min(self.map.len() as u64);
        let mut advised = self.advised.lock().unwrap_or_else(|e| e.into_inner());
        if advised.contains(&(start, end)) {
            return;
        }
        if advised.len() == SEQUENTIAL_RANGES {
            let (s, e) = advised.pop_front().expect("full");
            self.advise(Advice::Random, s, e);
        }
        advised.push_back((start, end));
        self.advise(Advice::Normal, start, end);
    }

    fn advise(&self, advice: Advice, start: u64, end: u64) {
        let _ = self.map.advise_range(advice, start as usize, (end - start) as usize);
    }

    /// Ask for every range (sorted, inside the mapping) at once, then wait for each
    /// (`MADV_POPULATE_READ`, Linux 5.14; where missing, the reads run on unawaited). Returns
    /// the bytes asked for.
    pub(crate) fn load(&self, ranges: &[(u64, u64)]) -> u64 {
        for &(s, e) in ranges {
            self.policy.will_need(&self.map, s, e - s);
        }
        let mut bytes = 0;
        for &(s, e) in ranges {
            populate(&self.map, s, e - s);
            bytes += e - s;
        }
        bytes
    }

    /// Is the page holding `off` in the page cache?
    fn resident(&self, off: u64) -> bool {
        let page = off & !(page_size() - 1);
        let mut vec = 0u8;
        // SAFETY: the page lies inside this live mapping (the caller's range does); mincore
        // writes one byte per page of the range, one page here, into `vec`.
        let rc = unsafe {
            libc::mincore(
                self.map.as_ptr().add(page as usize) as *mut libc::c_void,
                1,
                &mut vec as *mut u8 as *mut libc::c_uchar,
            )
        };
        rc == 0 && vec & 1 == 1
    }
}

/// `MADV_POPULATE_READ` (Linux 5.14) on the pages holding `[off, off + len)` of `map`: waits
/// for their reads and maps them. Where it is missing, the reads asked for run on unawaited;
/// past the file's end it fails (`EFAULT`) without a signal.
fn populate(map: &MmapRaw, off: u64, len: u64) {
    let start = off & !(page_size() - 1);
    let _ = map.advise_range(Advice::PopulateRead, start as usize, (off + len - start) as usize);
}

fn page_size() -> u64 {
    crate::format::PAGE_SIZE
}

/// The memory this process may fill: the machine's, or its cgroup's limit where lower (v2
/// `memory.max`, v1 `memory.limit_in_bytes`). Read once.
pub(crate) fn memory_limit() -> u64 {
    static LIMIT: OnceLock<u64> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        // SAFETY: sysinfo writes into the zeroed struct it is given.
        let total = unsafe {
            let mut info: libc::sysinfo = std::mem::zeroed();
            if libc::sysinfo(&mut info) == 0 {
                (info.totalram as u64).saturating_mul(info.mem_unit.max(1) as u64)
            } else {
                u64::MAX
            }
        };
        total.min(cgroup_limit().unwrap_or(u64::MAX))
    })
}

fn cgroup_limit() -> Option<u64> {
    let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let read = |p: String| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok();
    let mut limit = None::<u64>;
    for line in groups.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let found = if controllers.is_empty() {
            read(format!("/sys/fs/cgroup{path}/memory.max"))
        } else if controllers.split(',').any(|c| c == "memory") {
            read(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"))
        } else {
            None
        };
        if let Some(v) = found {
            limit = Some(limit.map_or(v, |l| l.min(v)));
        }
    }
    limit
}

/// How much one `MADV_WILLNEED` request on a file of device `dev` may ask for: the kernel reads
/// at most the larger of the device's readahead and its largest request; 128 KiB (the usual
/// default) where unknown (a partition's limits are its disk's).
fn readahead_step(dev: u64) -> u64 {
    let (major, minor) = (libc::major(dev as libc::dev_t), libc::minor(dev as libc::dev_t));
    let base = format!("/sys/dev/block/{major}:{minor}");
    let kb = |f: &str| {
        [format!("{base}/queue/{f}"), format!("{base}/../queue/{f}")]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok())
    };
    match kb("read_ahead_kb") {
        Some(ra) => (ra.max(kb("max_sectors_kb").unwrap_or(0)) << 10).clamp(128 << 10, MAX_STEP),
        None => 128 << 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> (tempfile::NamedTempFile, MmapRaw) {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(1 << 20).unwrap();
        let map = memmap2::MmapOptions::new().map_raw_read_only(f.as_file()).unwrap();
        (f, map)
    }

    #[test]
    fn settles_after_enough_node_reads_and_warms_up_once() {
        let (_f, map) = mapping();
        let a = Advisor::new(Arc::new(map), Arc::new(AccessPolicy::new(1 << 20, 0)));
        for _ in 1..READS_BEFORE_WARM_UP {
            a.note_read();
        }
        assert!(!a.policy.warming.load(Ordering::Relaxed));
        a.note_read();
        // The test file is not in memory (never written): the warm-up started.
        assert!(a.policy.warming.load(Ordering::Relaxed));
    }

    #[test]
    fn no_warm_up_for_a_file_bigger_than_half_of_memory() {
        let (_f, map) = mapping();
        let a = Advisor::new(Arc::new(map), Arc::new(AccessPolicy::new(memory_limit(), 0)));
        a.warm_up();
        assert!(!a.policy.warming.load(Ordering::Relaxed));
    }

    #[test]
    fn at_most_sixteen_ranges_carry_their_own_advice() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(64 << 20).unwrap(); // sparse: no page is in memory
        let map = memmap2::MmapOptions::new().map_raw_read_only(f.as_file()).unwrap();
        map.advise(Advice::Random).unwrap();
        let a = Advisor::new(Arc::new(map), Arc::new(AccessPolicy::new(64 << 20, 0)));
        let window = |i: u64| (i * SEQUENTIAL_MIN, (i + 1) * SEQUENTIAL_MIN);
        for i in 0..=SEQUENTIAL_RANGES as u64 {
            a.will_read(window(i).0, SEQUENTIAL_MIN);
            a.will_read(window(i).0, SEQUENTIAL_MIN); // the same part again: no second entry
        }
        let advised = a.advised.lock().unwrap();
        assert_eq!(advised.len(), SEQUENTIAL_RANGES);
        assert_eq!(advised.front(), Some(&window(1)), "the oldest went back to random");
        assert_eq!(advised.back(), Some(&window(SEQUENTIAL_RANGES as u64)));
    }

    #[test]
    fn memory_limit_is_known() {
        let m = memory_limit();
        assert!(m > 1 << 20 && m < u64::MAX, "{m}");
    }
}
