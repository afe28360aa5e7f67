//! A simulated disk for tests: memory that behaves like the mapped file, and remembers which
//! writes reached "disk" (were followed by a sync) so that tests can take crash images, fail
//! chosen operations, and run out of space.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::{Backing, Storage, View};
use crate::error::Result;
use crate::format::META_SIZE;

/// Fixed-capacity, 8-byte-aligned, zero-initialised memory (lazily backed by the OS).
struct Buf {
    words: Box<[AtomicU64]>,
}

impl Buf {
    fn ptr(&self) -> *mut u8 {
        self.words.as_ptr() as *mut u8
    }
    fn cap(&self) -> u64 {
        self.words.len() as u64 * 8
    }
}

/// One mutating operation since the last sync.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Write { off: u64, data: Vec<u8> },
    Grow { len: u64 },
    Truncate { len: u64 },
}

/// Which operations fail.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FailPlan {
    /// Index (0-based, counting writes, meta writes, grows, truncates and syncs) of the first
    /// failing op.
    pub at: u64,
    /// Fail every op from `at` on, not just that one.
    pub persistent: bool,
    /// Count syncs only: `at` is the index of a sync.
    pub syncs_only: bool,
    /// How the failing operation fails.
    pub kind: FailKind,
}

/// The ways an operation can fail, as a kernel reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum FailKind {
    /// EIO, nothing done.
    #[default]
    Eio,
    /// ENOSPC, nothing done.
    NoSpace,
    /// A write that stores its first half, then reports EIO.
    Short,
    /// An fsync that fails and loses the unsynced writes for good (Linux marks the pages clean:
    /// readers of the page cache still see them, a power loss does not keep them).
    SyncLost,
}

/// The crash images of §6 of DESIGN.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CrashKind {
    /// Only what was synced.
    DurableOnly,
    /// Synced data plus a random subset of the unsynced operations.
    RandomSubset,
    /// Everything, but the last write torn: a random subset of its 512-byte sectors lost.
    TornLast,
    /// Everything written, but no growth since the last sync (the file keeps its synced length;
    /// writes past it are lost).
    GrowthLost,
}

#[derive(Debug, Default)]
struct MemState {
    len: u64,
    durable: Vec<u8>,
    unsynced: Vec<Op>,
    ops: u64,
    syncs: u64,
    fail: Option<FailPlan>,
    /// How long each sync takes (tests of group commit make syncs overlap commits).
    sync_delay: std::time::Duration,
    /// Growths of the file to come before one fails with ENOSPC (a full disk met by
    /// `ftruncate`, which poisons nothing); independent of `fail`.
    grow_fail: Option<u64>,
    /// Writes asked for through the file rather than the mapping (`write_by_syscall`), and
    /// how many bytes the longest of them wrote.
    syscall_writes: (u64, u64),
}

pub(crate) struct MemStorage {
    buf: Arc<Buf>,
    state: Mutex<MemState>,
}

impl std::fmt::Debug for MemStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStorage").field("len", &self.state.lock().len).finish()
    }
}

impl MemStorage {
    /// An empty disk that can hold `cap` bytes.
    pub(crate) fn new(cap: u64) -> MemStorage {
        // calloc'd, so untouched pages cost nothing.
        let zeros: Box<[u64]> = vec![0u64; cap.div_ceil(8) as usize].into_boxed_slice();
        // SAFETY: AtomicU64 has the same size, alignment and bit validity as u64.
        let words: Box<[AtomicU64]> = unsafe { std::mem::transmute(zeros) };
        MemStorage { buf: Arc::new(Buf { words }), state: Mutex::new(MemState::default()) }
    }

    /// A disk holding `image`, all of it durable.
    pub(crate) fn from_image(image: &[u8], cap: u64) -> MemStorage {
        let s = MemStorage::new(cap.max(image.len() as u64));
        s.copy_in(0, image);
        let mut st = s.state.lock();
        st.len = image.len() as u64;
        st.durable = image.to_vec();
        drop(st);
        s
    }

    fn copy_in(&self, off: u64, data: &[u8]) {
        assert!(off + data.len() as u64 <= self.buf.cap());
        // SAFETY: in bounds (asserted); by invariant I6 no live slice covers the range.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.buf.ptr().add(off as usize),
                data.len(),
            )
        };
    }

    /// A second disk in exactly this state (contents, durable image, unsynced log): what a new
    /// process sees after this one crashed, while the machine runs on.
    pub(crate) fn crash_clone(&self) -> MemStorage {
        let st = self.state.lock();
        let s = MemStorage::new(self.buf.cap());
        // SAFETY: both buffers hold at least `len` bytes; no writer runs during a crash copy.
        unsafe { std::ptr::copy_nonoverlapping(self.buf.ptr(), s.buf.ptr(), st.len as usize) };
        *s.state.lock() = MemState {
            len: st.len,
            durable: st.durable.clone(),
            unsynced: st.unsynced.clone(),
            ops: 0,
            syncs: 0,
            fail: None,
            sync_delay: std::time::Duration::ZERO,
            grow_fail: None,
            syscall_writes: (0, 0),
        };
        s
    }

    pub(crate) fn set_fail(&self, plan: Option<FailPlan>) {
        self.state.lock().fail = plan;
    }

    /// Is a planned failure still to come (its op not reached yet; a failure planned for a
    /// meta-slot store moves to the op after it)?
    #[cfg(test)]
    pub(crate) fn fail_pending(&self) -> bool {
        let st = self.state.lock();
        let next = if st.fail.is_some_and(|p| p.syncs_only) { st.syncs } else { st.ops };
        st.fail.is_some_and(|p| p.at >= next)
    }

    /// Fail the growth of the file after `skip` more growths with ENOSPC, once (whatever the
    /// [`FailPlan`]: the two compose); `None`: no longer. A growth that fails counts as an
    /// operation.
    pub(crate) fn fail_growth(&self, skip: Option<u64>) {
        self.state.lock().grow_fail = skip;
    }

    /// Make every sync take `d` (slept before the sync takes effect, outside the disk's lock).
    #[cfg(test)]
    pub(crate) fn set_sync_delay(&self, d: std::time::Duration) {
        self.state.lock().sync_delay = d;
    }

    /// Writes routed through the file so far ([`Storage::write_by_syscall`]), and the length
    /// of the longest.
    #[cfg(test)]
    pub(crate) fn syscall_writes(&self) -> (u64, u64) {
        self.state.lock().syscall_writes
    }

    /// Number of syncs so far.
    #[cfg(test)]
    pub(crate) fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Number of mutating operations so far.
    pub(crate) fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// What a power loss leaves: the durable image plus the unsynced operations for which
    /// `keep(i)` is true (applied in order).
    #[cfg(test)]
    pub(crate) fn image_after_power_loss(&self, mut keep: impl FnMut(usize) -> bool) -> Vec<u8> {
        let st = self.state.lock();
        let mut img = st.durable.clone();
        for (i, op) in st.unsynced.iter().enumerate() {
            if !keep(i) {
                continue;
            }
            match op {
                Op::Grow { len } => {
                    if *len as usize > img.len() {
                        img.resize(*len as usize, 0);
                    }
                }
                Op::Truncate { len } => img.truncate(*len as usize),
                Op::Write { off, data } => {
                    let end = *off as usize + data.len();
                    if end > img.len() {
                        img.resize(end, 0);
                    }
                    img[*off as usize..end].copy_from_slice(data);
                }
            }
        }
        img
    }

    /// A crash image of `kind`; `seed` drives the random choices.
    pub(crate) fn crash_image(&self, kind: CrashKind, seed: u64) -> Vec<u8> {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let st = self.state.lock();
        let last_write = st.unsynced.iter().rposition(|op| matches!(op, Op::Write { .. }));
        let synced_len = st.durable.len();
        let mut img = st.durable.clone();
        for (i, op) in st.unsynced.iter().enumerate() {
            let keep = match kind {
                CrashKind::DurableOnly => false,
                CrashKind::RandomSubset => next() % 2 == 0,
                CrashKind::TornLast | CrashKind::GrowthLost => true,
            };
            if !keep {
                continue;
            }
            match op {
                Op::Grow { len } if kind != CrashKind::GrowthLost => {
                    img.resize(img.len().max(*len as usize), 0)
                }
                Op::Grow { .. } => {}
                Op::Truncate { len } => img.truncate(*len as usize),
                Op::Write { off, data } => {
                    let off = *off as usize;
                    let limit = if kind == CrashKind::GrowthLost { synced_len } else { usize::MAX };
                    for (j, sector) in data.chunks(512).enumerate() {
                        let at = off + j * 512;
                        let torn = kind == CrashKind::TornLast && Some(i) == last_write;
                        if (torn && next() % 2 == 0) || at + sector.len() > limit {
                            continue;
                        }
                        if at + sector.len() > img.len() {
                            img.resize(at + sector.len(), 0);
                        }
                        img[at..at + sector.len()].copy_from_slice(sector);
                    }
                }
            }
        }
        img
    }

    /// Count the op and decide whether (and how) it fails.
    fn tick(st: &mut MemState) -> Result<()> {
        Self::tick_kind(st, false).map_err(|(e, _)| e)
    }

    fn tick_kind(
        st: &mut MemState,
        sync: bool,
    ) -> std::result::Result<(), (crate::Error, FailKind)> {
        let i = if st.fail.is_some_and(|p| p.syncs_only) { st.syncs } else { st.ops };
        st.ops += 1;
        if st.fail.is_some_and(|p| p.syncs_only) && !sync {
            return Ok(());
        }
        if let Some(p) = st.fail
            && (i == p.at || (p.persistent && i > p.at))
        {
            let code = if p.kind == FailKind::NoSpace { libc::ENOSPC } else { libc::EIO };
            return Err((std::io::Error::from_raw_os_error(code).into(), p.kind));
        }
        Ok(())
    }
}

impl Storage for MemStorage {
    fn len(&self) -> u64 {
        self.state.lock().len
    }

    fn grow(&self, len: u64) -> Result<()> {
        let mut st = self.state.lock();
        Self::tick(&mut st)?;
        if len <= st.len {
            return Ok(());
        }
        let planned = match &mut st.grow_fail {
            Some(0) => true,
            Some(n) => {
                *n -= 1;
                false
            }
            None => false,
        };
        if planned {
            st.grow_fail = None;
        }
        if planned || len > self.buf.cap() {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC).into());
        }
        st.len = len;
        st.unsynced.push(Op::Grow { len });
        Ok(())
    }

    fn truncate(&self, len: u64) -> Result<()> {
        let mut st = self.state.lock();
        Self::tick(&mut st)?;
        if len < st.len {
            st.len = len;
            st.unsynced.push(Op::Truncate { len });
        }
        Ok(())
    }

    fn view(&self) -> Arc<View> {
        let backing: Arc<dyn Backing> = self.buf.clone();
        // SAFETY: the buffer lives as long as `backing`, is 8-aligned (made of AtomicU64) and
        // never moves; it is zero-initialised, so every byte below its capacity is readable.
        Arc::new(unsafe { View::new(self.buf.ptr(), self.buf.cap(), backing, None) })
    }

    fn refresh(&self) -> Result<u64> {
        Ok(self.len())
    }

    fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        let mut st = self.state.lock();
        assert!(off + data.len() as u64 <= st.len, "write past the end");
        if let Err((e, kind)) = Self::tick_kind(&mut st, false) {
            if kind == FailKind::Short {
                let half = &data[..data.len() / 2];
                self.copy_in(off, half);
                st.unsynced.push(Op::Write { off, data: half.to_vec() });
            }
            return Err(e);
        }
        self.copy_in(off, data);
        st.unsynced.push(Op::Write { off, data: data.to_vec() });
        Ok(())
    }

    /// A write as any other (the simulated disk has no mapping to spare), counted.
    fn write_by_syscall(&self, off: u64, data: &[u8]) -> Result<()> {
        {
            let mut st = self.state.lock();
            st.syscall_writes.0 += 1;
            st.syscall_writes.1 = st.syscall_writes.1.max(data.len() as u64);
        }
        self.write(off, data)
    }

    fn write_meta(&self, off: u64, data: &[u8; META_SIZE]) -> Result<()> {
        let mut st = self.state.lock();
        // Never failed: the file backend stores meta slots into the shared mapping, which cannot
        // report an error (failures surface at the next sync). Failing them here would model a
        // disk on which S1's invalidation itself fails (DESIGN §4.6), which the real backend
        // cannot produce. A failure planned for this op moves to the next one.
        let op = st.ops;
        if let Some(p) = &mut st.fail
            && !p.syncs_only
            && p.at == op
        {
            p.at += 1;
        }
        st.ops += 1;
        assert!(off.is_multiple_of(8) && off + META_SIZE as u64 <= st.len);
        for (i, chunk) in data.chunks_exact(8).enumerate() {
            let w = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
            self.buf.words[off as usize / 8 + i].store(w, Ordering::Release);
        }
        st.unsynced.push(Op::Write { off, data: data.to_vec() });
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        let delay = self.state.lock().sync_delay;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut st = self.state.lock();
        let res = Self::tick_kind(&mut st, true);
        st.syncs += 1;
        if let Err((e, kind)) = res {
            if kind == FailKind::SyncLost {
                st.unsynced.clear();
            }
            return Err(e);
        }
        let len = st.len as usize;
        // In order: a write may precede a truncation that cuts it.
        for op in std::mem::take(&mut st.unsynced) {
            match op {
                Op::Grow { len } => {
                    let n = st.durable.len().max(len as usize);
                    st.durable.resize(n, 0);
                }
                Op::Truncate { len } => st.durable.truncate(len as usize),
                Op::Write { off, data } => {
                    let end = off as usize + data.len();
                    if end > st.durable.len() {
                        st.durable.resize(end, 0);
                    }
                    st.durable[off as usize..end].copy_from_slice(&data);
                }
            }
        }
        st.durable.resize(len, 0);
        Ok(())
    }
}
