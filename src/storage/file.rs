//! The real backend: a file, mapped once over a reserved address range that is larger than the
//! file, so growth needs no remap; when the file outgrows the reservation a larger mapping is
//! made and the old one lives on for as long as views of it do.

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{Advice, MmapOptions, MmapRaw};
use parking_lot::RwLock;

use super::advice::{AccessPolicy, Advisor};
use super::{Storage, View};
use crate::error::{Error, Result};
use crate::format::{DATA_START, META_SIZE, PAGE_SIZE};

/// Smallest address-space reservation: files below it never remap.
const MIN_RESERVE: u64 = 1 << 30;

#[derive(Debug)]
pub(crate) struct FileStorage {
    file: Arc<File>,
    read_only: bool,
    state: RwLock<MapState>,
    /// The access advice (DESIGN §4.6a), shared by every mapping of the file.
    policy: Arc<AccessPolicy>,
    /// What the file was when opened: the registry checks that every name it uses still leads
    /// here, and gives a lock file it creates this owner and mode.
    pub(crate) id: FileId,
}

/// A file's identity and ownership, from `fstat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl FileId {
    pub(crate) fn of(meta: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode(),
        }
    }

    /// Same file (device and inode)?
    pub(crate) fn same(&self, other: &FileId) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

#[derive(Debug)]
struct MapState {
    len: u64,
    map: Arc<MmapRaw>,
    view: Arc<View>,
}

impl FileStorage {
    /// Open an existing file. Coordination between handles is the registry's (the lock file);
    /// the heap file itself carries no lock.
    pub(crate) fn open(path: &Path, read_only: bool) -> Result<FileStorage> {
        // O_NONBLOCK: opening a FIFO read-only would otherwise wait for a writer; it changes
        // nothing for a regular file, the only kind accepted.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(Error::NotAPheap { path: path.to_owned(), reason: "not a regular file" });
        }
        // Each name of a heap has its own lock file (`<name>-lock`): handles opened through two
        // names would not see each other's readers or writer.
        if std::os::unix::fs::MetadataExt::nlink(&meta) > 1 {
            return Err(Error::Refused {
                path: path.to_owned(),
                reason: format!(
                    "the heap file has {} hard links; handles opened through different names would not coordinate. Remove the other names (a copy is `pheap copy`), then open it again",
                    std::os::unix::fs::MetadataExt::nlink(&meta)
                ),
            });
        }
        let id = FileId::of(&meta);
        let len = meta.len();
        let policy = Arc::new(AccessPolicy::new(len, id.dev));
        let map = Self::map(&file, read_only, reserve_for(len))?;
        // Open reads the header and the three meta slots, four pages: with the page cache cold
        // and MADV_RANDOM they would be four reads one after another; ask for them as one.
        let _ = map.advise_range(Advice::WillNeed, 0, len.min(DATA_START) as usize);
        let view = view_of(&map, &policy);
        Ok(FileStorage {
            file: Arc::new(file),
            read_only,
            state: RwLock::new(MapState { len, map, view }),
            policy,
            id,
        })
    }

    /// The canonical path of the open file (`opened_as` is the path it was opened through):
    /// one `readlink` of `/proc/self/fd/N`, where `canonicalize` takes one per component of the
    /// path. `canonicalize` where `/proc` is not mounted, or where the file has lost its name
    /// (replaced or removed since it was opened: the caller then finds the name leading
    /// elsewhere, as it would have).
    pub(crate) fn canonical_path(&self, opened_as: &Path) -> std::io::Result<std::path::PathBuf> {
        use std::os::unix::ffi::OsStrExt;
        let link = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        match std::fs::read_link(link) {
            Ok(p) if p.is_absolute() && !p.as_os_str().as_bytes().ends_with(b" (deleted)") => Ok(p),
            _ => std::fs::canonicalize(opened_as),
        }
    }

    /// The file will never be written (a sealed heap, opened read-only): whole-file read-ins
    /// take it into the page cache in 2 MiB folios (DESIGN §4.6a). Advice: where the kernel
    /// refuses it, nothing changes.
    pub(crate) fn read_in_large_folios(&self) {
        if self.read_only {
            self.policy.read_in_large_folios(self.file.clone());
        }
    }

    fn map(file: &File, read_only: bool, reserve: u64) -> Result<Arc<MmapRaw>> {
        let mut opts = MmapOptions::new();
        opts.len(reserve as usize);
        let map = if read_only { opts.map_raw_read_only(file)? } else { opts.map_raw(file)? };
        // Point lookups fault only the pages they touch: the kernel's read-around would read
        // megabytes for each (§4.6a; many cold lookups get a warm-up instead).
        map.advise(Advice::Random)?;
        Ok(Arc::new(map))
    }
}

/// Writes this long or longer use write(2) rather than stores through the mapping.
const WRITE_SYSCALL_MIN: usize = 1 << 20;

fn reserve_for(len: u64) -> u64 {
    (len.saturating_mul(2)).max(MIN_RESERVE).next_power_of_two()
}

fn view_of(map: &Arc<MmapRaw>, policy: &Arc<AccessPolicy>) -> Arc<View> {
    let backing: Arc<dyn super::Backing> = map.clone();
    let advisor = Advisor::new(map.clone(), policy.clone());
    // SAFETY: the mapping stays valid while `backing` (a clone of its Arc) lives; mmap returns
    // page-aligned addresses; callers only slice below a snapshot's `end`, and the file is never
    // shortened below the `end` of any pinned snapshot or meta slot (I12), so every byte sliced
    // is backed by the file (a file cut short by another program is outside the contract, §7).
    Arc::new(unsafe { View::new(map.as_ptr(), map.len() as u64, backing, Some(advisor)) })
}

impl Storage for FileStorage {
    fn len(&self) -> u64 {
        self.state.read().len
    }

    /// [`AccessPolicy::read_in_whole`]: the range asked for with as much again after it, then
    /// waited for and mapped; for a sealed heap, faulted in as 2 MiB folios through a mapping
    /// of its own.
    fn prefetch(&self, start: u64, len: u64) {
        let st = self.state.read();
        self.policy.read_in_whole(&st.map, start, len, st.len);
    }

    fn grow(&self, len: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let mut st = self.state.write();
        if len <= st.len {
            return Ok(());
        }
        let old = st.len;
        // SAFETY: posix_fallocate only reads its integer arguments; the fd is open for writing.
        let rc = unsafe {
            libc::posix_fallocate(
                self.file.as_raw_fd(),
                old as libc::off_t,
                (len - old) as libc::off_t,
            )
        };
        if rc != 0 {
            // Give back whatever was extended, so the file ends where the heap knows it ends.
            let _ = self.file.set_len(old);
            return Err(std::io::Error::from_raw_os_error(rc).into());
        }
        st.len = len;
        if len > st.map.len() as u64 {
            st.map = Self::map(&self.file, false, reserve_for(len))?;
            st.view = view_of(&st.map, &self.policy);
        }
        self.policy.set_len(len);
        // Bring the new pages into the page cache in one batch (their extents are unwritten, so
        // this reads nothing from the disk): a store to each then takes a fault that only maps
        // it, instead of one that also allocates and zeroes it, one 4 KiB page at a time
        // (MADV_RANDOM). A hint: failure changes nothing but speed.
        let start = old & !(PAGE_SIZE - 1);
        let _ = st.map.advise_range(Advice::WillNeed, start as usize, (len - start) as usize);
        Ok(())
    }

    fn truncate(&self, len: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let mut st = self.state.write();
        if len < st.len {
            self.file.set_len(len)?;
            st.len = len;
            self.policy.set_len(len);
        }
        Ok(())
    }

    fn view(&self) -> Arc<View> {
        self.state.read().view.clone()
    }

    fn refresh(&self) -> Result<u64> {
        // Under the lock: a length read before this handle's own `grow` must not overwrite it.
        let mut st = self.state.write();
        let len = self.file.metadata()?.len();
        st.len = len;
        if len > st.map.len() as u64 {
            st.map = Self::map(&self.file, self.read_only, reserve_for(len))?;
            st.view = view_of(&st.map, &self.policy);
        }
        self.policy.set_len(len);
        Ok(len)
    }

    fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let st = self.state.read();
        let end = off.checked_add(data.len() as u64).expect("write range overflows");
        assert!(end <= st.len, "write past the end of the file: {off:#x}+{}", data.len());
        if data.len() >= WRITE_SYSCALL_MIN {
            // Long writes (out-of-line parts: arrays) go through write(2): the page cache then
            // takes them in large folios where the file system allows, and a mapping reads
            // physically contiguous memory (random reads of a 512 MiB array through the map
            // measured 25% faster than after stores through the mapping). Same page cache, so
            // the mapping shows the bytes at once; an I/O error is an error, not a SIGBUS.
            self.file.write_all_at(data, off)?;
            return Ok(());
        }
        // SAFETY: off..end lies within the file and the mapping (asserted; the mapping is at
        // least the file's length) which is writable; by invariant I6 no live slice covers it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                st.map.as_mut_ptr().add(off as usize),
                data.len(),
            )
        };
        Ok(())
    }

    fn write_by_syscall(&self, off: u64, data: &[u8]) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let end = off.checked_add(data.len() as u64).expect("write range overflows");
        assert!(end <= self.len(), "write past the end of the file: {off:#x}+{}", data.len());
        self.file.write_all_at(data, off)?;
        Ok(())
    }

    fn write_with(&self, off: u64, len: u64, fill: &mut dyn FnMut(&mut [u8])) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let st = self.state.read();
        let end = off.checked_add(len).expect("write range overflows");
        assert!(end <= st.len, "write past the end of the file: {off:#x}+{len}");
        // SAFETY: off..end lies within the file and the writable mapping (asserted); by invariant
        // I6 no live slice covers it (the writer writes only space no snapshot reaches), and the
        // state lock keeps the mapping in place until `fill` returns.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(st.map.as_mut_ptr().add(off as usize), len as usize)
        };
        fill(buf);
        Ok(())
    }

    fn write_meta(&self, off: u64, data: &[u8; META_SIZE]) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let st = self.state.read();
        assert!(off.is_multiple_of(8) && off + META_SIZE as u64 <= st.len);
        // Atomic stores, because readers copy slots with atomic loads while they are written. A
        // kill half-way leaves a slot whose checksum fails; the latest commit's slot is another
        // one (I2), so nothing acknowledged depends on this one.
        for (i, chunk) in data.chunks_exact(8).enumerate() {
            let word = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
            // SAFETY: the address is inside the file and the writable mapping (asserted), 8-aligned
            // (page-aligned mapping, aligned `off`); AtomicU64 has u64's layout, and every other
            // access to meta slots is atomic too.
            unsafe {
                (*(st.map.as_mut_ptr().add(off as usize + i * 8) as *const AtomicU64))
                    .store(word, Ordering::Release)
            };
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.file.sync_data()?;
        Ok(())
    }

    fn copy_range(&self, off: u64, len: u64, dest: &FileStorage) -> Result<()> {
        if dest.read_only {
            return Err(Error::ReadOnly);
        }
        let end = off.checked_add(len).expect("copy range overflows");
        assert!(end <= self.len() && end <= dest.len(), "copy past the end: {off:#x}+{len}");
        let (mut from, mut to) = (off as libc::loff_t, off as libc::loff_t);
        let mut left = len;
        while left > 0 {
            // SAFETY: copy_file_range reads and writes only the two descriptors (open, the second
            // for writing) at the offsets given; it writes back the two offsets, which point to
            // locals that outlive the call.
            let n = unsafe {
                libc::copy_file_range(
                    self.file.as_raw_fd(),
                    &mut from,
                    dest.file.as_raw_fd(),
                    &mut to,
                    left.min(1 << 30) as usize,
                    0,
                )
            };
            match n {
                n if n > 0 => left -= n as u64,
                0 => return Err(crate::error::corrupt(from as u64, "file shorter than its heap")),
                _ => {
                    let e = std::io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EINTR) => continue,
                        // Across file systems (EXDEV), or where the kernel or the file system
                        // cannot (ENOSYS, EOPNOTSUPP, EINVAL): through the mapping instead.
                        Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) => {
                            return super::copy_through_view(self, from as u64, left, dest);
                        }
                        _ => return Err(e.into()),
                    }
                }
            }
        }
        Ok(())
    }

    fn file_id(&self) -> Option<FileId> {
        Some(self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonical path comes from the open file (one `readlink`), whatever path it was
    /// opened through (here a symbolic link to its directory) and whatever path the caller
    /// names (here one through `..` and `.`). A file that has lost its name falls back to
    /// resolving the path, which then fails as the open would.
    #[test]
    fn canonical_path_is_the_open_files() {
        let dir = tempfile::tempdir().unwrap();
        let real_dir = dir.path().join("real");
        std::fs::create_dir(&real_dir).unwrap();
        let heap = real_dir.join("c.pheap");
        crate::Heap::open(&heap).unwrap();
        std::os::unix::fs::symlink(&real_dir, dir.path().join("link")).unwrap();
        let canonical = std::fs::canonicalize(&heap).unwrap();
        let through = dir.path().join("link/../real/./c.pheap");
        let storage = FileStorage::open(&dir.path().join("link/c.pheap"), true).unwrap();
        assert_eq!(storage.canonical_path(&through).unwrap(), canonical);
        std::fs::remove_file(&heap).unwrap();
        let err = storage.canonical_path(&heap).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }

    /// A write through the file shows in a view made before it, over bytes stored through the
    /// mapping (one page cache), and is in the file; a read-only storage refuses it.
    #[test]
    fn writes_through_the_file_show_in_the_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.pheap");
        std::fs::write(&path, []).unwrap();
        let storage = FileStorage::open(&path, false).unwrap();
        storage.grow(3 * PAGE_SIZE).unwrap();
        let view = storage.view();
        storage.write(PAGE_SIZE, &[1; 64]).unwrap();
        storage.write_by_syscall(PAGE_SIZE + 8, &[2; 16]).unwrap();
        let mut expect = [1u8; 64];
        expect[8..24].fill(2);
        assert_eq!(view.slice(PAGE_SIZE, 64, 3 * PAGE_SIZE).unwrap(), &expect);
        storage.sync().unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[PAGE_SIZE as usize..][..64], &expect);
        let ro = FileStorage::open(&path, true).unwrap();
        assert!(matches!(ro.write_by_syscall(0, &[0]), Err(Error::ReadOnly)));
    }
}
