//! All contact with the operating system: the file, its mapping, file locks, the boot id.
//!
//! Everything above this module reads the heap through a [`View`] (bounds-checked slices of a
//! mapping that never moves while the view is alive) and changes it only through [`Storage`], so
//! tests can swap in `mem::MemStorage` (test and fuzzing builds only), which fails chosen operations and produces crash images.
//!
//! Soundness contract (DESIGN.md invariant I6): a byte range handed out as a `&[u8]` by a view is
//! never written while that slice is alive. The commit protocol guarantees it: writers only write
//! space that no snapshot can reach (fresh allocations, the inactive meta slot), and meta slots
//! are only ever copied out with atomic loads, never borrowed.

#![allow(unsafe_code)]

mod advice;
pub(crate) mod file;
pub(crate) mod fork;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod mem;
mod ofd;
pub(crate) mod paths;
pub(crate) mod registry;

use std::fmt;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Result;
use crate::format::META_SIZE;

/// The storage seam. One writer at a time calls the mutating methods (the heap's writer lock
/// guarantees it); views may be used from any thread.
pub(crate) trait Storage: Send + Sync + fmt::Debug {
    /// Current length of the file in bytes.
    fn len(&self) -> u64;
    /// Grow the file to at least `len` bytes, reserving its blocks so that later writes cannot
    /// fail for lack of space. Views taken before stay valid.
    fn grow(&self, len: u64) -> Result<()>;
    /// Shorten the file to `len` bytes. The caller guarantees no view reads past `len` again.
    fn truncate(&self, len: u64) -> Result<()>;
    /// A view covering at least the current length.
    fn view(&self) -> Arc<View>;
    /// Learn the file's length anew (another process may have grown it, or trimmed its slack)
    /// and map any growth; returns it.
    fn refresh(&self) -> Result<u64>;
    /// Write `data` at `off`; `off + data.len() <= len()`.
    fn write(&self, off: u64, data: &[u8]) -> Result<()>;
    /// Write `data` at `off` through the file (write(2)) rather than stores into its mapping,
    /// where the backend has the choice: a page written so is not mapped writable, so its
    /// sync need not write-protect it again (in every thread's page tables) and the next write
    /// takes no fault (DESIGN §4.3a). Otherwise as [`Storage::write`].
    fn write_by_syscall(&self, off: u64, data: &[u8]) -> Result<()> {
        self.write(off, data)
    }
    /// Write `len` bytes at `off` that `fill` produces, in place where the backend can (the
    /// file backend hands `fill` the mapped bytes themselves: no intermediate copy). What the
    /// buffer holds when `fill` gets it is unspecified; `fill` should write all of it.
    fn write_with(&self, off: u64, len: u64, fill: &mut dyn FnMut(&mut [u8])) -> Result<()> {
        let mut buf = vec![0u8; len as usize];
        fill(&mut buf);
        self.write(off, &buf)
    }
    /// Write one meta slot ([`META_SIZE`] bytes at a page-aligned offset) with atomic stores, so
    /// that concurrent readers (atomic loads) never race; a crash may leave it torn, which its
    /// checksum detects.
    fn write_meta(&self, off: u64, data: &[u8; META_SIZE]) -> Result<()>;
    /// Make every completed write durable.
    fn sync(&self) -> Result<()>;
    /// Copy the `len` bytes at `off` into `dest` at the same offset (within both files' lengths):
    /// bytes a pinned snapshot keeps unwritten (I6). The file backend copies them in the kernel,
    /// file to file (`copy_file_range`), never through either mapping.
    fn copy_range(&self, off: u64, len: u64, dest: &file::FileStorage) -> Result<()> {
        copy_through_view(self, off, len, dest)
    }
    /// The file's identity, for a backend that is a file.
    fn file_id(&self) -> Option<file::FileId> {
        None
    }
    /// Bring `[start, start + len)` (below `len()`) into memory, at sequential speed, before
    /// returning: a hint whose failure changes nothing but speed (a backend in memory has
    /// nothing to do).
    fn prefetch(&self, _start: u64, _len: u64) {}
}

/// [`Storage::copy_range`] through `src`'s view: the bytes read where they are mapped and
/// written to `dest` (what a backend without a file-to-file copy does).
pub(crate) fn copy_through_view(
    src: &(impl Storage + ?Sized),
    off: u64,
    len: u64,
    dest: &file::FileStorage,
) -> Result<()> {
    let view = src.view();
    let bytes = view
        .slice(off, len, src.len())
        .ok_or_else(|| crate::error::corrupt(off, "a range to copy past the end"))?;
    dest.write(off, bytes)
}

/// Keeps a mapping (or a test buffer) alive.
pub(crate) trait Backing: Send + Sync {}
impl<T: Send + Sync> Backing for T {}

/// A read-only window onto the heap's bytes. Its address never changes while it is alive; a
/// grown file gets a new view and old views keep working for the bytes they covered.
pub(crate) struct View {
    ptr: *const u8,
    mapped: u64,
    _backing: Arc<dyn Backing>,
    /// The file backend's access advice (DESIGN §4.6a); none in memory.
    advisor: Option<Arc<advice::Advisor>>,
}

// SAFETY: `View` only hands out shared slices of memory that the contract above keeps immutable
// while borrowed, and copies meta slots with atomic loads; the backing is Send + Sync.
unsafe impl Send for View {}
// SAFETY: as for Send.
unsafe impl Sync for View {}

impl fmt::Debug for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("View").field("mapped", &self.mapped).finish()
    }
}

impl View {
    /// # Safety
    /// `ptr..ptr + mapped` must stay valid for reads (and, for the file backend, backed by the
    /// file up to the limits callers pass to [`View::slice`]) for as long as `backing` lives, and
    /// be 8-byte aligned.
    pub(crate) unsafe fn new(
        ptr: *const u8,
        mapped: u64,
        backing: Arc<dyn Backing>,
        advisor: Option<Arc<advice::Advisor>>,
    ) -> View {
        debug_assert!((ptr as usize).is_multiple_of(8));
        View { ptr, mapped, _backing: backing, advisor }
    }

    /// A trie node is being read (the lookup advice settles after enough of them, §4.6a).
    #[inline]
    pub(crate) fn note_read(&self) {
        if let Some(a) = &self.advisor {
            a.note_read();
        }
    }

    /// Bring the byte ranges `(offset, length)` into memory, waiting for them: in file order,
    /// ranges less than 64 KiB apart asked for as one. Returns the bytes asked for (the ranges
    /// as merged; nothing is done, and nothing counted, in memory).
    pub(crate) fn load(&self, ranges: impl Iterator<Item = (u64, u64)>) -> u64 {
        let Some(a) = &self.advisor else { return 0 };
        let mut ranges: Vec<(u64, u64)> = ranges
            .filter_map(|(off, len)| Some((off, off.checked_add(len)?.min(self.mapped))))
            .filter(|(s, e)| s < e)
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (s, e) in ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 + (64 << 10) => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        a.load(&merged)
    }

    /// `[off, off + len)` is about to be read whole (a large part, §4.6a).
    pub(crate) fn will_read(&self, off: u64, len: u64) {
        if let Some(a) = &self.advisor
            && len >= advice::PART_ADVICE_MIN
            && off.saturating_add(len) <= self.mapped
        {
            a.will_read(off, len);
        }
    }

    /// The offset of a slice this view handed out (`None` for any other slice).
    pub(crate) fn offset_of(&self, s: &[u8]) -> Option<u64> {
        let (start, p) = (self.ptr as usize, s.as_ptr() as usize);
        let off = p.checked_sub(start)? as u64;
        (off + s.len() as u64 <= self.mapped).then_some(off)
    }

    /// `len` bytes at `off`, if the range lies below `limit` (a snapshot's `end`, never beyond
    /// the file's length) and inside the mapping.
    #[inline]
    pub(crate) fn slice(&self, off: u64, len: u64, limit: u64) -> Option<&[u8]> {
        let end = off.checked_add(len)?;
        if end > limit || end > self.mapped {
            return None;
        }
        // SAFETY: off..end lies inside the mapping (checked above) and below `limit`, which the
        // caller takes from a snapshot whose bytes the file holds; invariant I6 keeps the range
        // unwritten while the returned borrow of `self` lives.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.add(off as usize), len as usize) })
    }

    /// Hint that `off..off + len` will be read soon: the cache lines are requested at once, in
    /// parallel, instead of one after another as dependent loads reach them. Never faults
    /// (prefetches of unmapped or out-of-range addresses are dropped), so the range is only
    /// clamped to the mapping.
    #[inline]
    pub(crate) fn prefetch(&self, off: u64, len: u64) {
        let (line, end) = (off & !63, off.saturating_add(len).min(self.mapped));
        if line < end {
            prefetch_lines(self.ptr.wrapping_add(line as usize), (end - line) as usize);
        }
    }

    /// Copy a meta slot out with atomic loads: another thread or process may be rewriting it, in
    /// which case the checksum of the copy fails and the caller uses another slot (I2 keeps the
    /// latest commit's slot untouched while a new one is written).
    /// One 8-byte word of a meta slot (`off` 8-aligned, inside the header pages), by an atomic
    /// load as [`View::read_meta`] reads them.
    pub(crate) fn read_meta_word(&self, off: u64) -> u64 {
        assert!(off.is_multiple_of(8) && off + 8 <= self.mapped);
        // SAFETY: as in `read_meta`: inside the mapping, 8-aligned, and every concurrent access
        // to meta slots is atomic.
        unsafe { (*(self.ptr.add(off as usize) as *const AtomicU64)).load(Ordering::SeqCst) }
    }

    pub(crate) fn read_meta(&self, off: u64) -> [u8; META_SIZE] {
        assert!(off.is_multiple_of(8) && off + META_SIZE as u64 <= self.mapped);
        let mut out = [0u8; META_SIZE];
        for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
            // SAFETY: the address is inside the mapping (asserted), 8-aligned (mapping and `off`
            // are), and AtomicU64 has the layout of u64; concurrent writers use atomics or the
            // kernel, so an atomic load is never a data race.
            let word = unsafe {
                (*(self.ptr.add(off as usize + i * 8) as *const AtomicU64)).load(Ordering::Acquire)
            };
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        out
    }
}

/// Move `from` to `to` unless `to` exists (`renameat2(RENAME_NOREPLACE)`): the file appears at
/// `to` whole, with one link, never beside a second name (heaps with two links are refused). On
/// file systems without it, a hard link then an unlink.
pub(crate) fn rename_noreplace(
    from: &std::path::Path,
    to: &std::path::Path,
) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &std::path::Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in a path"))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: both arguments are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
        return Err(e);
    }
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

/// The kernel's boot id (16 bytes), or zeros where unknown. Lets a reopened heap tell a process
/// crash (page cache intact, same boot) from a power loss or reboot.
pub(crate) fn boot_id() -> [u8; 16] {
    static BOOT: OnceLock<[u8; 16]> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let mut out = [0u8; 16];
        // One read of the 37-byte file (open, read, close: this is on every open's path).
        let mut buf = [0u8; 64];
        let read = std::fs::File::open("/proc/sys/kernel/random/boot_id")
            .and_then(|mut f| std::io::Read::read(&mut f, &mut buf));
        if let Ok(n) = read {
            let hex: Vec<u8> = buf[..n].iter().copied().filter(u8::is_ascii_hexdigit).collect();
            if hex.len() == 32 {
                for (i, pair) in hex.chunks(2).enumerate() {
                    let s = std::str::from_utf8(pair).unwrap_or("00");
                    out[i] = u8::from_str_radix(s, 16).unwrap_or(0);
                }
            }
        }
        out
    })
}

/// Hint that the first `len` bytes of `r` (all of it where shorter) will be read soon, as
/// [`View::prefetch`] does for the mapping: for memory of the program's own, such as a batch's
/// entries about to be read in another order than they were made in.
#[inline]
pub(crate) fn prefetch_memory<T: ?Sized>(r: &T, len: usize) {
    prefetch_lines(std::ptr::from_ref(r).cast::<u8>(), len.min(std::mem::size_of_val(r)));
}

/// Request the cache lines of `[ptr, ptr + len)` at once, in parallel. Never faults, whatever
/// the addresses (a prefetch of an unmapped one is dropped).
#[inline]
fn prefetch_lines(ptr: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let mut at = 0;
        while at < len {
            // SAFETY: a prefetch neither reads into the program nor faults, whatever the
            // address; `wrapping_add` makes no claim about the allocation.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.wrapping_add(at).cast()) };
            at += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ptr, len);
}
