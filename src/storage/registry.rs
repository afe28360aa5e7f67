//! The shared reader registry and the cross-process writer lock: a small lock file beside the
//! heap (`<heap>-lock`, layout in `format`), mapped by every process that has the heap open.
//!
//! Liveness comes from the kernel, never from a pid: every claim is an open-file-description
//! (OFD) lock on one byte of the lock file, and the kernel drops a process's OFD locks when it
//! dies, however it dies. OFD locks belong to an open file description, not to a process, so two
//! handles of one file in one process exclude each other like two processes do; and since
//! threads of one process share a handle's description, each handle serialises its own threads
//! with an in-process mutex before it takes a byte lock.
//!
//! The protocol that keeps reused space out of every reader's sight (DESIGN.md §5):
//! a reader stores its snapshot's id in its slot, issues a full fence, and re-reads the meta
//! slots, starting over if a newer commit has appeared; the writer, after the previous commit's
//! meta-slot store and a full fence, scans the slots. Either the writer sees the pin, or the
//! reader sees the newer commit and re-pins; so a pin the writer misses is never older than the
//! writer's base commit, and the writer reuses only space freed up to that commit.

use std::fs::{File, OpenOptions};
use std::io;

use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use memmap2::{Advice, MmapOptions, MmapRaw};
use parking_lot::Mutex;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use super::file::FileId;
use super::fork::{fork_generation, install_fork_handler, register_fd, unregister_fd};
use super::ofd::{held, lock, unlock};
use crate::error::{Error, Result};
use crate::format::*;

/// How a handle takes part in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The lock file is writable: readers pin snapshots in slots; writing is possible.
    Registered,
    /// A read-only handle that may only read the lock file: while it has a live read
    /// transaction it holds a shared lock on [`LOCK_BYTE_ANON`], and writers then reuse no space
    /// freed since they last saw that lock free.
    Anonymous,
    /// A read-only handle on a read-only file system with no lock file: no writer can exist.
    Unlocked,
}

/// What a read transaction holds in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pin {
    Slot(u32),
    Anonymous,
    Unlocked,
}

/// A live reader as the registry shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReaderInfo {
    /// Registry slot.
    pub slot: u32,
    /// Transaction id of the pinned snapshot.
    pub txn_id: u64,
    /// Process that pinned it.
    pub pid: u32,
    /// When it was pinned, in nanoseconds since the Unix epoch.
    pub since_ns: u64,
    /// Bytes freed by commits after this snapshot and not yet reusable: what this reader holds
    /// back (shared with any older reader). `None` when no reader slot was free to measure it.
    pub holds_bytes: Option<u64>,
}

/// A pinned snapshot found by a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LivePin {
    pub txn: TxnId,
    pub end: u64,
}

/// Idle slots a handle keeps for its next read transactions; more are given back.
const MAX_IDLE_SLOTS: usize = 64;

#[derive(Debug)]
pub(crate) struct Registry {
    path: PathBuf,
    file: Option<File>,
    /// A description of the heap file of its own, holding [`HEAP_LOCK_BYTE_OPEN`] shared for
    /// the life of the handle (heaps on the simulated disk have none).
    heap_lock: Option<File>,
    /// Its entry in the table the fork handler walks.
    heap_fork_entry: Option<usize>,
    map: Option<MmapRaw>,
    mode: Mode,
    pool: Mutex<Pool>,
    /// One idle slot of this handle (1 + its index; 0: none), taken and given back without the
    /// pool's lock: the common case of one read transaction after another. It stays owned.
    spare: AtomicU32,
    /// Live anonymous read transactions of this handle.
    anonymous: Mutex<usize>,
    /// Entry in the table the fork handler walks.
    fork_entry: Option<usize>,
    /// [`fork_generation`] at open.
    fork_gen: u64,
    /// This process (a forked child cannot use the handle, so it stays right).
    pid: u32,
    /// The liveness byte (`LOCK_BYTE_LIVENESS + k`) that tells other handles this one is alive
    /// while it holds the writer lock: claimed when it first takes it, held until it closes.
    liveness: Mutex<Option<u32>>,
    /// Names this handle in the lock header's `writer_token` (random: [`new_token`]); drawn
    /// when the handle first takes the writer lock (a reader never needs one).
    token: std::sync::OnceLock<u64>,
}

/// The slots this handle owns (holds the lock byte of), and which of them are idle.
#[derive(Debug)]
struct Pool {
    idle: Vec<u32>,
    owned: Vec<u64>,
}

impl Pool {
    fn owns(&self, i: u32) -> bool {
        self.owned[i as usize / 64] >> (i % 64) & 1 == 1
    }
}

fn lock_file_error(path: &Path, reason: String) -> Error {
    Error::LockFile { path: path.to_owned(), reason }
}

/// `<heap>-lock` beside `real`, the file the heap path resolves to (canonical), so every path to
/// one heap (through symbolic links, relative or absolute) names one lock file.
fn lock_path(real: &Path) -> PathBuf {
    let mut name = real.file_name().expect("a canonical file path has a name").to_owned();
    name.push("-lock");
    real.with_file_name(name)
}

/// Is the heap file at `path` open in any handle of any process? (Every handle holds
/// [`HEAP_LOCK_BYTE_OPEN`] shared.)
pub(crate) fn in_use(file: &File) -> io::Result<bool> {
    held(file, libc::F_WRLCK, HEAP_LOCK_BYTE_OPEN)
}

/// Before replacing the heap file at `path` (a copy onto it): hold its join lock, so no handle
/// joins it meanwhile, and refuse if any handle has it open. The returned description holds the
/// lock until dropped; an opener that was waiting for it finds the name leading to the new file
/// and opens that (DESIGN §5.8).
pub(crate) fn hold_for_replacing(path: &Path) -> Result<File> {
    let (file, typ) = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => (f, libc::F_WRLCK),
        // Without write access to it, a shared lock still keeps writers from joining.
        Err(e) if denied(&e) => (File::open(path)?, libc::F_RDLCK),
        Err(e) => return Err(e.into()),
    };
    lock(&file, typ, HEAP_LOCK_BYTE_JOIN, true)?;
    if in_use(&file)? {
        return Err(Error::Refused {
            path: path.to_owned(),
            reason: "the destination is a heap in use by another handle or process; replacing it would lose their commits. Close them first".into(),
        });
    }
    Ok(file)
}

fn denied(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM | libc::EROFS))
}

/// Why [`Registry::open`] did not join.
#[derive(Debug)]
pub(crate) enum JoinError {
    /// The heap's name leads to another file than the one opened (it was replaced meanwhile, by
    /// a copy onto it): open it again.
    Replaced,
    Other(Error),
}

impl From<Error> for JoinError {
    fn from(e: Error) -> Self {
        JoinError::Other(e)
    }
}

impl From<io::Error> for JoinError {
    fn from(e: io::Error) -> Self {
        JoinError::Other(e.into())
    }
}

fn file_id(path: &Path) -> io::Result<FileId> {
    Ok(FileId::of(&std::fs::metadata(path)?))
}

/// Open (creating with `mode` and `owner`) the lock file at `path`. Most opens find it: it is
/// opened first and created only when missing (one syscall, not two, on the common path).
fn open_lock_file(path: &Path, heap: &FileId) -> io::Result<File> {
    let mode = heap.mode & 0o666;
    let mut tries = 0;
    loop {
        match OpenOptions::new().read(true).write(true).open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            opened => return opened,
        }
        match OpenOptions::new().read(true).write(true).create_new(true).mode(mode).open(path) {
            Ok(f) => {
                // The heap's owner and mode, whoever opened it first (root running `pheap stat`
                // must not lock the owner out), and whatever the umask. Best effort: without the
                // right to, the file stays the opener's.
                let _ = std::os::unix::fs::fchown(&f, Some(heap.uid), Some(heap.gid));
                let _ = f.set_permissions(std::fs::Permissions::from_mode(mode));
                return Ok(f);
            }
            // Another opener created it between the two calls: open theirs (a few times at
            // most: a file that keeps vanishing is somebody removing it).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 3 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

impl Registry {
    /// Join the heap at `real` (canonical: every path to one heap names one lock file; the
    /// file `id`, opened by the caller): open its lock file (creating it, or re-initialising it
    /// if no other handle has it open), and check that every handle of the heap shares it
    /// (DESIGN §5.8).
    pub(crate) fn open(
        real: &Path,
        id: &FileId,
        read_only: bool,
    ) -> std::result::Result<Registry, JoinError> {
        // A description of the heap file of our own for its locks (the storage's must carry
        // none: a forked child keeps that one).
        let heap_lock = OpenOptions::new().read(true).write(!read_only).open(real)?;
        if !FileId::of(&heap_lock.metadata()?).same(id) {
            return Err(JoinError::Replaced);
        }
        let join = if read_only { libc::F_RDLCK } else { libc::F_WRLCK };
        lock(&heap_lock, join, HEAP_LOCK_BYTE_JOIN, true)?;
        let res = Registry::open_joining(real, id, heap_lock, read_only);
        // The lock went with the description if joining failed.
        if let Ok(r) = &res {
            unlock(r.heap_lock.as_ref().expect("a heap lock"), HEAP_LOCK_BYTE_JOIN);
        }
        res
    }

    /// [`Registry::open`] under the heap's join lock.
    fn open_joining(
        real: &Path,
        id: &FileId,
        heap_lock: File,
        read_only: bool,
    ) -> std::result::Result<Registry, JoinError> {
        // Replaced (a copy onto it) after we opened it and before we held the join lock: the
        // replacer held that lock while it checked that nobody had the heap open.
        if !file_id(real)?.same(id) {
            return Err(JoinError::Replaced);
        }
        let path = lock_path(real);
        let rw = open_lock_file(&path, id);
        let (file, mode) = match rw {
            Ok(f) => (f, Mode::Registered),
            Err(e) if read_only && denied(&e) => match File::open(&path) {
                Ok(f) => (f, Mode::Anonymous),
                Err(e2)
                    if e2.kind() == io::ErrorKind::NotFound
                        && e.raw_os_error() == Some(libc::EROFS) =>
                {
                    lock(&heap_lock, libc::F_RDLCK, HEAP_LOCK_BYTE_OPEN, true)?;
                    let mut r = Registry::unlocked(path);
                    r.heap_fork_entry = register_fd(heap_lock.as_raw_fd());
                    r.heap_lock = Some(heap_lock);
                    return Ok(r);
                }
                Err(e2) => {
                    return Err(lock_file_error(
                        &path,
                        format!(
                            "cannot open it ({e2}); a read-only user needs read access to an existing lock file: open the heap writable once to create it"
                        ),
                    )
                    .into());
                }
            },
            Err(e) => {
                let hint = if read_only {
                    ""
                } else {
                    "; writers need read-write access to the lock file and, to create it, to its directory"
                };
                return Err(lock_file_error(&path, format!("cannot open it ({e}){hint}")).into());
            }
        };
        let mut r = Registry::from_file_checked(path, file, mode, Some(&heap_lock))?;
        r.heap_fork_entry = register_fd(heap_lock.as_raw_fd());
        r.heap_lock = Some(heap_lock);
        Ok(r)
    }

    /// A registry of its own, over an unnamed temporary file: for heaps on the simulated disk.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn private() -> Result<Registry> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(std::env::temp_dir())?;
        Registry::from_file("(private)".into(), file, Mode::Registered)
    }

    /// A registry over an already open lock file (tests use a private temporary file).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn from_file(path: PathBuf, file: File, mode: Mode) -> Result<Registry> {
        Registry::from_file_checked(path, file, mode, None)
    }

    /// A registry over an already open lock file; with `heap_lock`, also checks that every
    /// handle of the heap shares this lock file and joins the heap's openers.
    fn from_file_checked(
        path: PathBuf,
        file: File,
        mode: Mode,
        heap_lock: Option<&File>,
    ) -> Result<Registry> {
        install_fork_handler();
        // A read-only descriptor can only take read locks: enough to wait out an initialiser.
        let init = if mode == Mode::Registered { libc::F_WRLCK } else { libc::F_RDLCK };
        lock(&file, init, LOCK_BYTE_INIT, true)?;
        let res = (|| {
            // Under the init lock: an initialiser may have been changing its length until now.
            let meta = file.metadata()?;
            if !meta.is_file() {
                return Err(lock_file_error(&path, "not a regular file".into()));
            }
            let (alone, map) = Registry::init(&path, &file, mode, meta.len())?;
            let Some(heap_lock) = heap_lock else { return Ok(map) };
            // Alone on this lock file while another handle has the heap open: that handle uses
            // another lock file (this one replaced or deleted since, or the heap reached through
            // another name). Sharing neither pins nor the writer lock, the two would corrupt it.
            if alone && held(heap_lock, libc::F_WRLCK, HEAP_LOCK_BYTE_OPEN)? {
                return Err(Error::Refused {
                    path: path.clone(),
                    reason: "the heap is open in another handle that uses a different lock file (this one was deleted or replaced while the heap was in use, or the heap is reached through another name); close every process using the heap, then open it again".into(),
                });
            }
            // The lock file we joined must still be the one its name leads to: one deleted or
            // replaced meanwhile would be shared with nobody who opens the heap later.
            if !file_id(&path).is_ok_and(|now| now.same(&FileId::of(&meta))) {
                return Err(Error::Refused {
                    path: path.clone(),
                    reason: "the lock file was deleted or replaced while the heap was being opened; never remove a lock file while the heap is in use".into(),
                });
            }
            lock(heap_lock, libc::F_RDLCK, HEAP_LOCK_BYTE_OPEN, true)?;
            Ok(map)
        })();
        unlock(&file, LOCK_BYTE_INIT);
        let map = res?;
        let fork_entry = register_fd(file.as_raw_fd());
        Ok(Registry {
            path,
            file: Some(file),
            heap_lock: None,
            heap_fork_entry: None,
            map,
            mode,
            pool: Mutex::new(Pool { idle: Vec::new(), owned: vec![0; READER_SLOTS as usize / 64] }),
            spare: AtomicU32::new(0),
            anonymous: Mutex::new(0),
            fork_entry,
            fork_gen: fork_generation(),
            pid: std::process::id(),
            liveness: Mutex::new(None),
            token: std::sync::OnceLock::new(),
        })
    }

    /// The registry of a sealed heap (DESIGN §2.1a): no lock file, no lock; no writer can
    /// exist, so readers pin nothing.
    pub(crate) fn sealed(heap: &Path) -> Registry {
        Registry::unlocked(lock_path(heap))
    }

    fn unlocked(path: PathBuf) -> Registry {
        Registry {
            path,
            file: None,
            heap_lock: None,
            heap_fork_entry: None,
            map: None,
            mode: Mode::Unlocked,
            pool: Mutex::new(Pool { idle: Vec::new(), owned: Vec::new() }),
            spare: AtomicU32::new(0),
            anonymous: Mutex::new(0),
            fork_entry: None,
            fork_gen: fork_generation(),
            pid: std::process::id(),
            liveness: Mutex::new(None),
            token: std::sync::OnceLock::new(),
        }
    }

    /// Under the init lock, the lock file `len` long: a handle alone re-initialises the file
    /// (nothing in it can matter: every pin belongs to a dead process); otherwise the file must
    /// have this build's layout. Then join the openers (shared lock on the open byte, held until
    /// close). Returns whether it was alone, and for a registered handle the file's mapping,
    /// through which the header is read and written (no read or write calls).
    fn init(path: &Path, file: &File, mode: Mode, len: u64) -> Result<(bool, Option<MmapRaw>)> {
        let alone = mode == Mode::Registered && lock(file, libc::F_WRLCK, LOCK_BYTE_OPEN, false)?;
        // The header's page and the first slots' are read next: one read for both when the
        // page cache is cold (a hint; its failure changes nothing but speed).
        let ahead = (READER_SLOTS_OFFSET + PAGE_SIZE) as libc::off_t;
        // SAFETY: a plain syscall on a descriptor we own; no memory is passed.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, ahead, libc::POSIX_FADV_WILLNEED) };
        let ours = |h: &LockHeader| {
            h.magic == LOCK_MAGIC
                && h.signature.get() == lock_signature()
                && h.slot_count.get() == READER_SLOTS
                && h.slot_size.get() as usize == size_of::<ReaderSlot>()
        };
        let foreign = || {
            lock_file_error(
                path,
                "it is in use with a layout this build does not share (a different pheap version, or not a pheap lock file); close every process using the heap, or use the same pheap build".into(),
            )
        };
        if mode != Mode::Registered {
            // Read-only: the header is read, not mapped.
            let mut buf = [0u8; size_of::<LockHeader>()];
            let found = (len == LOCK_FILE_LEN && file.read_exact_at(&mut buf, 0).is_ok())
                .then(|| LockHeader::read_from_bytes(&buf).expect("64 bytes"))
                .filter(ours);
            if found.is_none() {
                return Err(foreign());
            }
            lock(file, libc::F_RDLCK, LOCK_BYTE_OPEN, true)?;
            return Ok((false, None));
        }
        if len != LOCK_FILE_LEN {
            if !alone {
                return Err(foreign());
            }
            // Just created (empty), or left by another build: a file of zeros, the right length.
            file.set_len(0)?;
            file.set_len(LOCK_FILE_LEN)?;
        }
        let map = map_lock_file(file)?;
        let found = (len == LOCK_FILE_LEN).then(|| read_header(&map)).filter(ours);
        if alone {
            match found {
                // Our own layout: clear the slots ever claimed (cheaper than a new file).
                Some(old) => {
                    let used =
                        old.hwm.get().min(READER_SLOTS) as u64 * size_of::<ReaderSlot>() as u64;
                    for off in (READER_SLOTS_OFFSET..READER_SLOTS_OFFSET + used).step_by(8) {
                        map_word(&map, off).store(0, Ordering::Relaxed);
                    }
                }
                // Another layout of the right length: all zeros, as a new file (the mapping
                // stays valid: the file is its length again before anything is read).
                None if len == LOCK_FILE_LEN => {
                    file.set_len(0)?;
                    file.set_len(LOCK_FILE_LEN)?;
                }
                None => {}
            }
            let mut h = LockHeader::new_zeroed();
            h.magic = LOCK_MAGIC;
            h.signature = lock_signature().into();
            h.slot_count = READER_SLOTS.into();
            h.slot_size = (size_of::<ReaderSlot>() as u32).into();
            for (i, chunk) in h.as_bytes().chunks_exact(8).enumerate() {
                let word = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
                map_word(&map, i as u64 * 8).store(word, Ordering::Release);
            }
        } else if found.is_none() {
            return Err(foreign());
        }
        // Shared from here on (converts the exclusive lock of a lone opener atomically).
        lock(file, libc::F_RDLCK, LOCK_BYTE_OPEN, true)?;
        Ok((alone, Some(map)))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self) -> &File {
        self.file.as_ref().expect("a lock file")
    }

    /// The atomic word at `off` in the mapped lock file.
    fn word(&self, off: u64) -> &AtomicU64 {
        map_word(self.map.as_ref().expect("registered handles map the lock file"), off)
    }

    fn word32(&self, off: u64) -> &AtomicU32 {
        let map = self.map.as_ref().expect("registered handles map the lock file");
        assert!(off.is_multiple_of(4) && off + 4 <= LOCK_FILE_LEN);
        // SAFETY: as in `word`, for a 4-aligned 4-byte word.
        unsafe { &*(map.as_ptr().add(off as usize) as *const AtomicU32) }
    }

    fn hwm(&self) -> &AtomicU32 {
        self.word32(LOCK_HWM_AT)
    }

    /// The 8-byte field at `field` (a `SLOT_*_AT`) of reader slot `i`.
    fn slot_word(&self, i: u32, field: u64) -> &AtomicU64 {
        self.word(reader_slot_at(i) + field)
    }

    /// The pid field of reader slot `i`.
    fn slot_pid(&self, i: u32) -> &AtomicU32 {
        self.word32(reader_slot_at(i) + SLOT_PID_AT)
    }

    // -----------------------------------------------------------------------------------------
    // Readers

    /// A registry place for one read transaction: an idle slot of this handle, or a newly
    /// claimed one.
    pub(crate) fn enter(&self) -> Result<Pin> {
        match self.mode {
            Mode::Unlocked => Ok(Pin::Unlocked),
            Mode::Anonymous => {
                let mut n = self.anonymous.lock();
                if *n == 0 {
                    // Read locks conflict only with write locks, which no one takes on this
                    // byte: this returns at once.
                    lock(self.file(), libc::F_RDLCK, LOCK_BYTE_ANON, true)?;
                }
                *n += 1;
                Ok(Pin::Anonymous)
            }
            Mode::Registered => {
                let spare = self.spare.swap(0, Ordering::Acquire);
                if spare != 0 {
                    return Ok(Pin::Slot(spare - 1));
                }
                let mut pool = self.pool.lock();
                if let Some(i) = pool.idle.pop() {
                    return Ok(Pin::Slot(i));
                }
                Ok(Pin::Slot(self.claim(&mut pool)?))
            }
        }
    }

    /// Claim a free slot (the lowest whose lock byte no one holds) for this handle.
    fn claim(&self, pool: &mut Pool) -> Result<u32> {
        for i in 0..READER_SLOTS {
            if pool.owns(i) {
                continue;
            }
            if lock(self.file(), libc::F_WRLCK, LOCK_BYTE_SLOTS + i as u64, false)? {
                pool.owned[i as usize / 64] |= 1 << (i % 64);
                // A dead owner's pin may linger: clear it before the slot counts.
                self.slot_word(i, SLOT_PIN_AT).store(0, Ordering::SeqCst);
                self.slot_pid(i).store(self.pid, Ordering::Relaxed);
                self.hwm().fetch_max(i + 1, Ordering::SeqCst);
                return Ok(i);
            }
        }
        Err(Error::ReadersFull { max: READER_SLOTS })
    }

    /// Publish `txn` (with its `end`) as pinned by `pin`, then fence: the caller must re-read
    /// the meta slots after this and pin again if a newer commit has appeared.
    pub(crate) fn pin(&self, pin: Pin, txn: TxnId, end: u64) {
        if let Pin::Slot(i) = pin {
            self.slot_word(i, SLOT_END_AT).store(end, Ordering::Relaxed);
            self.slot_word(i, SLOT_SINCE_AT).store(coarse_now_ns(), Ordering::Relaxed);
            // Ordered before the caller's re-read of the slots by the fence below.
            self.slot_word(i, SLOT_PIN_AT).store(txn.0 + 1, Ordering::Relaxed);
        }
        fence(Ordering::SeqCst);
    }

    /// The read transaction holding `pin` ended.
    pub(crate) fn leave(&self, pin: Pin) {
        match pin {
            Pin::Slot(i) => {
                self.unpin(i);
                self.release(i);
            }
            Pin::Anonymous => {
                let mut n = self.anonymous.lock();
                *n -= 1;
                if *n == 0 {
                    unlock(self.file(), LOCK_BYTE_ANON);
                }
            }
            Pin::Unlocked => {}
        }
    }

    /// Clear slot `i`'s pin: the slot stays this handle's (a thread keeps it for its next read
    /// transaction, or [`Registry::release`] gives it back).
    pub(crate) fn unpin(&self, i: u32) {
        self.slot_word(i, SLOT_PIN_AT).store(0, Ordering::Release);
    }

    /// Give back slot `i`, unpinned, to the handle's pool (or to every process, past the idle
    /// slots a handle keeps).
    pub(crate) fn release(&self, i: u32) {
        if self.spare.compare_exchange(0, i + 1, Ordering::Release, Ordering::Relaxed).is_ok() {
            return;
        }
        let mut pool = self.pool.lock();
        // The spare counts among the idle slots a handle keeps.
        if pool.idle.len() + 1 < MAX_IDLE_SLOTS {
            pool.idle.push(i);
        } else {
            pool.owned[i as usize / 64] &= !(1 << (i % 64));
            unlock(self.file(), LOCK_BYTE_SLOTS + i as u64);
        }
    }

    /// Snapshots pinned by live readers of every process, oldest first. The oldest pins are
    /// checked for a live owner (by trying its slot's lock) until one is live; pins after it are
    /// kept unchecked, which only delays reuse. With `reclaim` (the writer), a dead owner's pin
    /// is cleared; without, it is only skipped.
    pub(crate) fn live_pins(&self, reclaim: bool) -> Result<Vec<LivePin>> {
        if self.mode != Mode::Registered {
            return Ok(Vec::new());
        }
        fence(Ordering::SeqCst);
        let hwm = self.hwm().load(Ordering::SeqCst).min(READER_SLOTS);
        let mut pins: Vec<(LivePin, u32)> = (0..hwm)
            .filter_map(|i| {
                let pin = self.slot_word(i, SLOT_PIN_AT).load(Ordering::SeqCst);
                (pin != 0).then(|| {
                    let end = self.slot_word(i, SLOT_END_AT).load(Ordering::Relaxed);
                    (LivePin { txn: TxnId(pin - 1), end }, i)
                })
            })
            .collect();
        pins.sort_unstable_by_key(|p| p.0.txn);
        let mut dead = Vec::new();
        for &(_, i) in &pins {
            if self.pool.lock().owns(i) || !self.owner_gone(i, reclaim)? {
                break;
            }
            dead.push(i);
        }
        pins.retain(|p| !dead.contains(&p.1));
        Ok(pins.into_iter().map(|p| p.0).collect())
    }

    /// Has slot `i`'s owner gone? Decided by taking its lock byte: only a dead owner (or none)
    /// lets us. With `reclaim` the pin is cleared while the byte is ours; else only tested.
    fn owner_gone(&self, i: u32, reclaim: bool) -> Result<bool> {
        let byte = LOCK_BYTE_SLOTS + i as u64;
        if !reclaim {
            return Ok(!held(self.file(), libc::F_WRLCK, byte)?);
        }
        if !lock(self.file(), libc::F_WRLCK, byte, false)? {
            return Ok(false);
        }
        self.slot_word(i, SLOT_PIN_AT).store(0, Ordering::SeqCst);
        unlock(self.file(), byte);
        Ok(true)
    }

    /// Live readers of every process, for diagnostics. A slot in transition (being claimed, or
    /// reclaimed by the writer) may show its previous owner for an instant.
    pub(crate) fn readers(&self) -> Result<Vec<ReaderInfo>> {
        if self.mode != Mode::Registered {
            return Ok(Vec::new());
        }
        let hwm = self.hwm().load(Ordering::SeqCst).min(READER_SLOTS);
        let mut out = Vec::new();
        for i in 0..hwm {
            let pin = self.slot_word(i, SLOT_PIN_AT).load(Ordering::SeqCst);
            let live = pin != 0 && (self.pool.lock().owns(i) || !self.owner_gone(i, false)?);
            // A writer reclaiming a dead pin holds its byte for a moment: a pin that changed
            // meanwhile was not live.
            if !live || self.slot_word(i, SLOT_PIN_AT).load(Ordering::SeqCst) != pin {
                continue;
            }
            out.push(ReaderInfo {
                slot: i,
                txn_id: pin - 1,
                pid: self.slot_pid(i).load(Ordering::Relaxed),
                since_ns: self.slot_word(i, SLOT_SINCE_AT).load(Ordering::Relaxed),
                holds_bytes: None,
            });
        }
        out.sort_by_key(|r| r.txn_id);
        Ok(out)
    }

    // -----------------------------------------------------------------------------------------
    // The writer

    /// Take the writer lock of all processes; `Ok(None)` if another holds it and `wait` is
    /// false. The caller holds the handle's in-process writer mutex. `Some(true)`: this handle
    /// held the lock last, so no one has changed the heap file's length since it released it
    /// (every length change is made under the lock, I12): its own idea of the length is exact.
    ///
    /// The lock is the header's writer word (DESIGN §5.2): taken by one compare-and-swap from
    /// free to 1 + this handle's liveness byte, with no system call; a holder whose liveness
    /// byte is free has died (the kernel dropped it), and its lock is taken over. A waiter
    /// sleeps on the word (a futex), woken one at a time by releases, or after 10 ms to ask
    /// again whether the holder lives.
    pub(crate) fn lock_writer(&self, wait: bool) -> Result<Option<bool>> {
        if self.mode != Mode::Registered {
            return Err(Error::ReadOnly);
        }
        let me = self.liveness_byte()? + 1;
        let w = self.word32(LOCK_WRITER_AT);
        // Whether to ask the kernel if the holder lives: at first, and after a wait that timed
        // out (a wake means a release; whoever holds the word since took it just now).
        let mut check = true;
        // A handle that waited takes the lock marked as waited for, so that its release wakes
        // the next waiter (one at a time: all of them would race for it).
        let mut waited = false;
        loop {
            let cur = w.load(Ordering::SeqCst);
            let holder = cur & !WRITER_WAITERS;
            if holder == 0 || (check && !self.alive(holder - 1)?) {
                // Free, or its holder died: ours (a waiter's mark stays, so it is woken).
                let mark = if waited { WRITER_WAITERS } else { cur & WRITER_WAITERS };
                if w.compare_exchange(cur, me | mark, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                    break;
                }
                continue;
            }
            debug_assert_ne!(holder, me, "the in-process mutex keeps this handle's threads out");
            if !wait {
                return Ok(None);
            }
            let marked = cur | WRITER_WAITERS;
            if cur != marked
                && w.compare_exchange(cur, marked, Ordering::SeqCst, Ordering::SeqCst).is_err()
            {
                continue;
            }
            waited = true;
            check = futex_wait(w, marked, std::time::Duration::from_millis(10));
        }
        self.word32(LOCK_WRITER_PID_AT).store(self.pid, Ordering::Relaxed);
        let token = *self.token.get_or_init(new_token);
        let last = self.word(LOCK_WRITER_TOKEN_AT).swap(token, Ordering::SeqCst);
        Ok(Some(last == token))
    }

    /// This handle's liveness byte, claimed the first time it is needed: the first free one
    /// from a random place (one `fcntl`, but on a collision with a live handle's).
    fn liveness_byte(&self) -> Result<u32> {
        let mut slot = self.liveness.lock();
        if let Some(k) = *slot {
            return Ok(k);
        }
        let start = (*self.token.get_or_init(new_token) >> 34) as u32 % LIVENESS_BYTES;
        let k = self.claim_liveness(start)?;
        *slot = Some(k);
        Ok(k)
    }

    /// Claim the first free liveness byte from `start` on.
    fn claim_liveness(&self, start: u32) -> Result<u32> {
        let mut k = start;
        while !lock(self.file(), libc::F_WRLCK, LOCK_BYTE_LIVENESS + k as u64, false)? {
            k = (k + 1) % LIVENESS_BYTES;
        }
        // A dead handle may have held the writer lock: its byte was free, so it is gone (a live
        // holder keeps its byte); waiters would take ours for its life. Free the lock.
        self.free_writer_lock_of(k);
        Ok(k)
    }

    /// Free the writer lock if the word names liveness byte `k`, waking a waiter.
    fn free_writer_lock_of(&self, k: u32) {
        let w = self.word32(LOCK_WRITER_AT);
        let cur = w.load(Ordering::SeqCst);
        if cur & !WRITER_WAITERS == k + 1
            && w.compare_exchange(cur, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok()
            && cur & WRITER_WAITERS != 0
        {
            futex_wake(w);
        }
    }

    /// Does another description hold liveness byte `k` (its handle is alive)?
    fn alive(&self, k: u32) -> Result<bool> {
        Ok(held(self.file(), libc::F_WRLCK, LOCK_BYTE_LIVENESS + k as u64)?)
    }

    /// The commit the last writer left settled (everything it wrote synced when it released the
    /// writer lock), if it says so; clears the mark, since the caller, holding the writer lock
    /// now, may write (DESIGN §5.5).
    pub(crate) fn take_settled(&self) -> Option<TxnId> {
        if self.mode != Mode::Registered {
            return None;
        }
        let v = self.word(LOCK_SETTLED_AT).swap(0, Ordering::SeqCst);
        (v != 0).then(|| TxnId(v - 1))
    }

    /// Mark `txn` as the latest commit with everything the holder wrote synced (the caller holds
    /// the writer lock and is about to release it).
    pub(crate) fn set_settled(&self, txn: TxnId) {
        if self.mode == Mode::Registered {
            self.word(LOCK_SETTLED_AT).store(txn.0 + 1, Ordering::SeqCst);
        }
    }

    /// Release the writer lock (before the in-process mutex), waking the handles that wait.
    pub(crate) fn unlock_writer(&self) {
        if self.mode == Mode::Registered {
            let w = self.word32(LOCK_WRITER_AT);
            let old = w.swap(0, Ordering::SeqCst);
            debug_assert_eq!(Some(old & !WRITER_WAITERS), self.liveness.lock().map(|i| i + 1));
            if old & WRITER_WAITERS != 0 {
                futex_wake(w);
            }
        }
    }

    /// Pid of the process that last began a write transaction (it holds the writer lock while
    /// one is open), if any did since the lock file was initialised.
    pub(crate) fn last_writer_pid(&self) -> Option<u32> {
        match self.mode {
            Mode::Registered => {
                Some(self.word32(LOCK_WRITER_PID_AT).load(Ordering::Relaxed)).filter(|&p| p != 0)
            }
            _ => None,
        }
    }

    /// Does another handle (of any process) hold the writer lock now? `None` without a lock
    /// file (no writer can exist).
    pub(crate) fn writer_active(&self) -> Result<Option<bool>> {
        match self.mode {
            Mode::Unlocked => Ok(None),
            Mode::Registered => {
                let holder = self.word32(LOCK_WRITER_AT).load(Ordering::SeqCst) & !WRITER_WAITERS;
                let mine = self.liveness.lock().map(|i| i + 1);
                Ok(Some(holder != 0 && Some(holder) != mine && self.alive(holder - 1)?))
            }
            Mode::Anonymous => {
                // Not mapped (the file is read-only to this user): read the word.
                let mut b = [0u8; 4];
                self.file().read_exact_at(&mut b, LOCK_WRITER_AT)?;
                let holder = u32::from_ne_bytes(b) & !WRITER_WAITERS;
                Ok(Some(holder != 0 && self.alive(holder - 1)?))
            }
        }
    }

    /// Has an unregistered reader a read transaction open (whose snapshot is unknown)?
    pub(crate) fn anonymous_present(&self) -> Result<bool> {
        match self.mode {
            Mode::Registered => Ok(held(self.file(), libc::F_WRLCK, LOCK_BYTE_ANON)?),
            _ => Ok(true),
        }
    }

    /// For the writer, whose base is `base`: the oldest snapshot an anonymous reader may hold,
    /// if any has a read transaction open.
    pub(crate) fn anonymous_horizon(&self, base: TxnId) -> Result<Option<TxnId>> {
        let clear = self.word(LOCK_ANON_CLEAR_AT);
        if held(self.file(), libc::F_WRLCK, LOCK_BYTE_ANON)? {
            Ok(Some(TxnId(clear.load(Ordering::SeqCst))))
        } else {
            // An anonymous reader arriving from now on reads a commit no older than `base`.
            clear.store(base.0, Ordering::SeqCst);
            Ok(None)
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if fork_generation() != self.fork_gen {
            // Not inherited (MADV_DONTFORK): the range may hold another mapping of the child's.
            std::mem::forget(self.map.take());
        } else if let Some(k) = *self.liveness.lock() {
            // The writer lock is released before its handle closes; should it not be, it goes
            // now rather than when waiters find its liveness byte free.
            self.free_writer_lock_of(k);
        }
        // Before the descriptors close, so the fork handler never touches a reused number.
        for e in [self.fork_entry, self.heap_fork_entry].into_iter().flatten() {
            unregister_fd(e);
        }
    }
}

/// Sleep while the futex word `w` (in a shared mapping: other processes wake it) holds
/// `expected`, at most `timeout`; a wake, a signal or a changed value ends it early. Returns
/// whether the time ran out.
fn futex_wait(w: &AtomicU32, expected: u32, timeout: std::time::Duration) -> bool {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT reads the aligned 4-byte word `w` (alive for the call) and the
    // timespec, which outlives it; it writes nothing. Not FUTEX_PRIVATE: the word is in a
    // shared file mapping, waited on and woken by other processes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            w.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT)
}

/// Wake one waiter on the futex word `w` (it marks the word again when it takes the lock, so
/// its release wakes the next).
fn futex_wake(w: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the word's address as a key; it reads and writes no memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            w.as_ptr(),
            libc::FUTEX_WAKE,
            1i32,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// Map the lock file (`LOCK_FILE_LEN` long) for a registered handle.
fn map_lock_file(file: &File) -> io::Result<MmapRaw> {
    let map = MmapOptions::new().len(LOCK_FILE_LEN as usize).map_raw(file)?;
    // A mapping holds a reference to the open file description, and with it the description's
    // locks: a child must not inherit it (see `fork()` below).
    map.advise(Advice::DontFork)?;
    // A process touches the header and its own slots' pages: read-around would pull the whole
    // file in on the first fault (about 170 us when it is not cached yet).
    map.advise(Advice::Random)?;
    Ok(map)
}

/// The atomic word at `off` in the lock file's mapping `map`.
fn map_word(map: &MmapRaw, off: u64) -> &AtomicU64 {
    assert!(off.is_multiple_of(8) && off + 8 <= LOCK_FILE_LEN && map.len() as u64 >= LOCK_FILE_LEN);
    // SAFETY: the range is inside the mapping (asserted; the file is only ever shortened by an
    // opener that is alone, under the init lock, and made its length again before any word is
    // read); the address is 8-aligned (page-aligned mapping, aligned offset); every access to
    // the lock file's words, by any process, is atomic.
    unsafe { &*(map.as_ptr().add(off as usize) as *const AtomicU64) }
}

/// The lock file's header, read word by word (other handles change some of its words).
fn read_header(map: &MmapRaw) -> LockHeader {
    let mut buf = [0u8; size_of::<LockHeader>()];
    for (i, chunk) in buf.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&map_word(map, i as u64 * 8).load(Ordering::Acquire).to_ne_bytes());
    }
    LockHeader::read_from_bytes(&buf).expect("64 bytes")
}

/// A writer token: 64 random bits (nonzero: zero is a fresh lock file's), so distinct for every
/// handle of every process, whatever their pids (two containers' processes may both be pid 1).
/// Two live handles share one with probability 2^-64 per pair.
fn new_token() -> u64 {
    let mut b = [0u8; 8];
    // Without randomness, the clock and a per-process count still differ between handles of a
    // process; across processes the pid joins them.
    if getrandom::fill(&mut b).is_err() {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let n = u64::from(COUNT.fetch_add(1, Ordering::Relaxed));
        b = (now_ns() ^ (u64::from(std::process::id()) << 40) ^ n).to_le_bytes();
    }
    u64::from_le_bytes(b).max(1)
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Wall-clock nanoseconds, from the coarse clock (a few ns, milliseconds of resolution): the
/// pin's `since` is a diagnostic, read by `readers()`; every read transaction sets it.
fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given, which outlives the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two handles of one heap: (registry, its heap file kept open), through the real lock file.
    fn two_handles(dir: &Path) -> (Registry, Registry) {
        let path = dir.join("r.pheap");
        crate::Heap::open(&path).expect("a new heap");
        let path = std::fs::canonicalize(&path).expect("canonical");
        let id = FileId::of(&std::fs::metadata(&path).expect("metadata"));
        let open = || Registry::open(&path, &id, false).map_err(|_| "join").expect("joins");
        (open(), open())
    }

    /// A pin is seen by the other handle's scan (the writer's horizon) with its snapshot's
    /// `end`, listed by `readers` with this process's pid, and gone once it leaves; so is its
    /// slot's pin when the pin is replaced.
    #[test]
    fn pins_are_seen_across_handles_until_they_leave() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_handles(dir.path());
        assert!(b.live_pins(false).unwrap().is_empty());
        let p = a.enter().unwrap();
        a.pin(p, TxnId(7), 65536);
        let q = a.enter().unwrap();
        a.pin(q, TxnId(5), 32768);
        let pins = b.live_pins(true).unwrap();
        let got: Vec<(u64, u64)> = pins.iter().map(|p| (p.txn.0, p.end)).collect();
        assert_eq!(got, vec![(5, 32768), (7, 65536)], "oldest first");
        let readers = b.readers().unwrap();
        assert_eq!(readers.len(), 2);
        assert!(readers.iter().all(|r| r.pid == std::process::id()));
        a.leave(q);
        let got: Vec<u64> = b.live_pins(true).unwrap().iter().map(|p| p.txn.0).collect();
        assert_eq!(got, vec![7]);
        a.leave(p);
        assert!(b.live_pins(true).unwrap().is_empty());
    }

    /// One writer across handles; the lock reports whether this handle held it last (the writer
    /// token), so a handle that did knows the file's length has not changed since (I12).
    #[test]
    fn the_writer_lock_excludes_other_handles_and_says_who_held_it_last() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_handles(dir.path());
        assert!(a.lock_writer(false).unwrap().is_some());
        assert_eq!(b.lock_writer(false).unwrap(), None, "held by the other handle");
        assert_eq!(a.last_writer_pid(), Some(std::process::id()));
        a.unlock_writer();
        assert_eq!(a.lock_writer(false).unwrap(), Some(true), "a held it last");
        a.unlock_writer();
        assert_eq!(b.lock_writer(false).unwrap(), Some(false), "a held it last, not b");
        b.unlock_writer();
        assert_eq!(a.lock_writer(false).unwrap(), Some(false), "b held it since");
        a.unlock_writer();
    }

    /// A handle dies as a killed process does: its lock file's description goes (and with it
    /// every lock byte it held), whatever the words of the lock file still say.
    fn die(mut r: Registry) {
        *r.liveness.lock() = None;
        drop((r.map.take(), r.file.take()));
    }

    fn writer_word(r: &Registry) -> u32 {
        r.word32(LOCK_WRITER_AT).load(Ordering::SeqCst)
    }

    /// The writer lock is a word: a waiter marks it and sleeps, and the release wakes it; a
    /// holder that dies without releasing it is taken over by the next writer, waiting or not,
    /// and by whoever claims its liveness byte next.
    #[test]
    fn the_writer_word_wakes_waiters_and_outlives_a_dead_holder() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_handles(dir.path());
        assert!(a.lock_writer(false).unwrap().is_some());
        assert_eq!(writer_word(&b), a.liveness.lock().unwrap() + 1);
        assert_eq!(b.writer_active().unwrap(), Some(true));
        assert_eq!(a.writer_active().unwrap(), Some(false), "its own lock is not another's");
        let b = std::sync::Arc::new(b);
        let waiter = {
            let b = b.clone();
            std::thread::spawn(move || {
                let t = std::time::Instant::now();
                assert!(b.lock_writer(true).unwrap().is_some());
                t.elapsed()
            })
        };
        while writer_word(&a) & WRITER_WAITERS == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        a.unlock_writer();
        let waited = waiter.join().unwrap();
        assert!(waited >= std::time::Duration::from_millis(50), "{waited:?}: waited for a");
        // b holds it, marked as waited for: its release will wake the next waiter, if any.
        assert_eq!(writer_word(&a), (b.liveness.lock().unwrap() + 1) | WRITER_WAITERS);
        // b dies holding it: a takes it over at once, without waiting.
        let b = std::sync::Arc::into_inner(b).unwrap();
        let b_slot = b.liveness.lock().unwrap();
        die(b);
        assert_eq!(a.writer_active().unwrap(), Some(false), "a dead holder is no writer");
        assert_eq!(a.lock_writer(false).unwrap(), Some(false), "b held it last");
        a.unlock_writer();
        // A dead holder's liveness byte claimed by another handle: the claim frees the lock
        // (else waiters would take the new owner's byte for the dead holder's).
        let (c, d) = two_handles(dir.path());
        assert!(c.lock_writer(false).unwrap().is_some());
        let c_byte = c.liveness.lock().unwrap();
        die(c);
        assert_eq!(writer_word(&d), c_byte + 1, "the word still names the dead holder");
        assert_eq!(d.claim_liveness(c_byte).unwrap(), c_byte);
        assert_eq!(writer_word(&d), 0, "freed by the claim of {c_byte} (b's was {b_slot})");
        // A live handle's byte is skipped.
        assert!(a.lock_writer(false).unwrap().is_some());
        let a_byte = a.liveness.lock().unwrap();
        assert_eq!(d.claim_liveness(a_byte).unwrap(), (a_byte + 1) % LIVENESS_BYTES);
        assert_eq!(writer_word(&d), a_byte + 1, "a live holder keeps the lock");
        a.unlock_writer();
    }

    /// An opener alone re-initialises the lock file through its mapping: the slots ever claimed
    /// (pins of dead processes: here written into the file while no handle had it open) are
    /// zeroed, the header is this build's with no slot claimed; and a handle that never takes
    /// the writer lock never draws a writer token.
    #[test]
    fn a_lone_opener_clears_stale_pins_through_its_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_handles(dir.path());
        let p = a.enter().unwrap();
        a.pin(p, TxnId(7), 65536);
        let lock = a.path().to_owned();
        drop((a, b));
        let f = OpenOptions::new().read(true).write(true).open(&lock).unwrap();
        let stale = [0xa5u8; 3 * 64];
        f.write_all_at(&stale, READER_SLOTS_OFFSET).unwrap();
        f.write_all_at(&3u32.to_le_bytes(), LOCK_HWM_AT).unwrap();
        let (c, _d) = two_handles(dir.path());
        let mut slots = [0u8; 4 * 64];
        f.read_exact_at(&mut slots, READER_SLOTS_OFFSET).unwrap();
        assert!(slots.iter().all(|&x| x == 0), "stale slots zeroed");
        let mut header = [0u8; 64];
        f.read_exact_at(&mut header, 0).unwrap();
        let h = LockHeader::read_from_bytes(&header).unwrap();
        assert_eq!((h.magic, h.hwm.get(), h.slot_count.get()), (LOCK_MAGIC, 0, READER_SLOTS));
        assert!(c.live_pins(true).unwrap().is_empty());
        assert!(c.token.get().is_none(), "no token drawn without the writer lock");
        assert!(c.lock_writer(false).unwrap().is_some());
        assert!(c.token.get().is_some());
        c.unlock_writer();
    }

    /// Writer tokens must differ between processes whose pids are equal (two containers' pid 1):
    /// a token built from the pid let a writer skip its length check and die of SIGBUS
    /// (reliability issue, item 12a). Tokens are random: none carries the pid.
    #[test]
    fn writer_tokens_do_not_depend_on_the_pid() {
        let pid = u64::from(std::process::id());
        let tokens: std::collections::HashSet<u64> = (0..1000).map(|_| new_token()).collect();
        assert_eq!(tokens.len(), 1000);
        assert!(!tokens.contains(&0));
        assert!(tokens.iter().filter(|&&t| t >> 32 == pid).count() <= 1);
    }
}
