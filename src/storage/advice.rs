//! Access advice for the heap's mapping (DESIGN §4.6a): what the kernel is told to read ahead,
//! and when.
//!
//! - The mapping starts `MADV_RANDOM`: a cold open and its first lookups fault only the pages
//!   they touch (the default read-around, 8 MiB on the development disk, made a cold open read
//!   megabytes for its four pages).
//! - After [`READS_BEFORE_READ_AROUND`] node reads, a handle is doing more than a few lookups;
//!   if the file fits in half the memory this process may use, the whole mapping is switched to
//!   `MADV_NORMAL`, so that a cold fault reads around it (the heap is read at close to disk speed
//!   while lookups run) and a warm one costs what it did. A heap bigger than that stays random:
//!   read-around would evict what it reads before it is used.
//! - A part (an array, a long value) is read whole: when one of 64 KiB or more is handed out and
//!   its first page is not in memory, a short one is asked for in one request
//!   (`MADV_WILLNEED`), and a long one's pages are advised `MADV_NORMAL`: the kernel's readahead
//!   then follows the reader, in large folios, a window ahead (a part bigger than memory streams
//!   too). A warm part costs one `mincore`. (Measured on a 1 GiB array: `MADV_SEQUENTIAL` on the
//!   range streamed at a third of the speed, and `MADV_WILLNEED` of the whole range, from a
//!   background thread, at two thirds: its pages come in one at a time.)

#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use memmap2::{Advice, MmapRaw};

/// Node reads by one handle before its mapping is considered for read-around.
pub(crate) const READS_BEFORE_READ_AROUND: u32 = 256;

/// Parts at least this long are advised when read.
pub(crate) const PART_ADVICE_MIN: u64 = 64 << 10;

/// Parts at least this long are read through the kernel's readahead; shorter ones are asked for
/// in one request of exactly their length (readahead would read megabytes around them).
const SEQUENTIAL_MIN: u64 = 2 << 20;

/// At most this many ranges of one mapping carry their own advice (each splits the mapping's
/// kernel area in up to three, and a process may have only so many: 65,530 by default); the
/// oldest goes back to random when another comes.
const SEQUENTIAL_RANGES: usize = 16;

/// The largest `MADV_WILLNEED` request made.
const MAX_STEP: u64 = 2 << 20;

/// The advice state of one open file, shared by all its mappings.
#[derive(Debug, Default)]
pub(crate) struct AccessPolicy {
    /// Node reads so far, until [`AccessPolicy::settled`].
    reads: AtomicU32,
    /// The lookup advice has been chosen (and is re-chosen when the file grows).
    settled: AtomicBool,
    /// The mapping reads around faults (`MADV_NORMAL`).
    read_around: AtomicBool,
    /// The file's length, as the storage last knew it.
    len: AtomicU64,
    /// The file's device, and the largest request it reads whole (found when first needed).
    dev: u64,
    step: OnceLock<u64>,
}

impl AccessPolicy {
    pub(crate) fn new(len: u64, dev: u64) -> AccessPolicy {
        AccessPolicy { len: AtomicU64::new(len), dev, ..AccessPolicy::default() }
    }

    /// The advice a new mapping of the file gets.
    pub(crate) fn advice(&self) -> Advice {
        if self.read_around.load(Ordering::Relaxed) { Advice::Normal } else { Advice::Random }
    }

    /// The file is now `len` long: once settled, the lookup advice is chosen again for `map`.
    pub(crate) fn set_len(&self, len: u64, map: &MmapRaw) {
        self.len.store(len, Ordering::Relaxed);
        if self.settled.load(Ordering::Relaxed) {
            self.choose(map);
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

    /// Read-around when the file fits in half the memory this process may use.
    fn choose(&self, map: &MmapRaw) {
        let fits = self.len.load(Ordering::Relaxed) <= memory_limit() / 2;
        if fits != self.read_around.swap(fits, Ordering::Relaxed) {
            let _ = map.advise(if fits { Advice::Normal } else { Advice::Random });
        }
    }
}

/// What a [`super::View`] of a file mapping advises through: the mapping (kept alive for the
/// background thread) and the file's policy.
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

    /// A node was read: the policy settles after [`READS_BEFORE_READ_AROUND`] of them. After
    /// that, one relaxed load.
    #[inline]
    pub(crate) fn note_read(&self) {
        if !self.policy.settled.load(Ordering::Relaxed) {
            self.count_read();
        }
    }

    #[cold]
    fn count_read(&self) {
        if self.policy.reads.fetch_add(1, Ordering::Relaxed) + 1 == READS_BEFORE_READ_AROUND {
            self.policy.settled.store(true, Ordering::Relaxed);
            self.policy.choose(&self.map);
        }
    }

    /// `[off, off + len)` (inside the mapping, at least [`PART_ADVICE_MIN`] long) is about to
    /// be read whole.
    pub(crate) fn will_read(&self, off: u64, len: u64) {
        if self.policy.read_around.load(Ordering::Relaxed) || self.resident(off) {
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
            let start = s & !(page_size() - 1);
            let _ =
                self.map.advise_range(Advice::PopulateRead, start as usize, (e - start) as usize);
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
    fn read_around_only_for_a_file_that_fits_in_half_of_memory() {
        let (_f, map) = mapping();
        let small = AccessPolicy::new(1 << 20, 0);
        small.choose(&map);
        assert_eq!(small.advice(), Advice::Normal);
        let big = AccessPolicy::new(memory_limit() / 2 + 1, 0);
        big.choose(&map);
        assert_eq!(big.advice(), Advice::Random);
        // Grown past it after settling: back to random.
        small.settled.store(true, Ordering::Relaxed);
        small.set_len(memory_limit(), &map);
        assert_eq!(small.advice(), Advice::Random);
    }

    #[test]
    fn settles_after_enough_node_reads() {
        let (_f, map) = mapping();
        let a = Advisor::new(Arc::new(map), Arc::new(AccessPolicy::new(1 << 20, 0)));
        for _ in 1..READS_BEFORE_READ_AROUND {
            a.note_read();
        }
        assert_eq!(a.policy.advice(), Advice::Random);
        a.note_read();
        assert_eq!(a.policy.advice(), Advice::Normal);
    }

    #[test]
    fn memory_limit_is_known() {
        let m = memory_limit();
        assert!(m > 1 << 20 && m < u64::MAX, "{m}");
    }
}
