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
    /// Index (0-based, counting writes, meta writes, grows and syncs) of the first failing op.
    pub at: u64,
    /// Fail every op from `at` on, not just that one.
    pub persistent: bool,
    /// Count syncs only: `at` is the index of a sync.
    pub syncs_only: bool,
}

#[derive(Debug, Default)]
struct MemState {
    len: u64,
    durable: Vec<u8>,
    unsynced: Vec<Op>,
    ops: u64,
    syncs: u64,
    fail: Option<FailPlan>,
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
        };
        s
    }

    pub(crate) fn set_fail(&self, plan: Option<FailPlan>) {
        self.state.lock().fail = plan;
    }

    /// Number of syncs so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Number of mutating operations so far.
    pub(crate) fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// What a power loss leaves: the durable image plus the unsynced operations for which
    /// `keep(i)` is true (applied in order).
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

    /// Count the op and decide whether it fails.
    fn tick(st: &mut MemState) -> Result<()> {
        Self::tick_kind(st, false)
    }

    fn tick_kind(st: &mut MemState, sync: bool) -> Result<()> {
        let i = if st.fail.is_some_and(|p| p.syncs_only) { st.syncs } else { st.ops };
        st.ops += 1;
        if st.fail.is_some_and(|p| p.syncs_only) && !sync {
            return Ok(());
        }
        if let Some(p) = st.fail
            && (i == p.at || (p.persistent && i > p.at))
        {
            return Err(std::io::Error::other("injected I/O failure").into());
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
        if len > self.buf.cap() {
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
        Arc::new(unsafe { View::new(self.buf.ptr(), self.buf.cap(), backing) })
    }

    fn refresh(&self) -> Result<u64> {
        Ok(self.len())
    }

    fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        let mut st = self.state.lock();
        Self::tick(&mut st)?;
        assert!(off + data.len() as u64 <= st.len, "write past the end");
        self.copy_in(off, data);
        st.unsynced.push(Op::Write { off, data: data.to_vec() });
        Ok(())
    }

    fn write_meta(&self, off: u64, data: &[u8; META_SIZE]) -> Result<()> {
        let mut st = self.state.lock();
        Self::tick(&mut st)?;
        assert!(off.is_multiple_of(8) && off + META_SIZE as u64 <= st.len);
        for (i, chunk) in data.chunks_exact(8).enumerate() {
            let w = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
            self.buf.words[off as usize / 8 + i].store(w, Ordering::Release);
        }
        st.unsynced.push(Op::Write { off, data: data.to_vec() });
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        let mut st = self.state.lock();
        let res = Self::tick_kind(&mut st, true);
        st.syncs += 1;
        res?;
        let len = st.len as usize;
        let ops = std::mem::take(&mut st.unsynced);
        st.durable.resize(len, 0);
        for op in ops {
            if let Op::Write { off, data } = op {
                st.durable[off as usize..off as usize + data.len()].copy_from_slice(&data);
            }
        }
        Ok(())
    }
}
