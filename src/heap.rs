//! `Heap`: opening, creating, and the handle the public API hangs on.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use parking_lot::Mutex;
use zerocopy::{FromBytes, IntoBytes};

use crate::alloc::AllocSummary;
use crate::check::{CheckReport, check};
use crate::copy::CopyStats;
use crate::error::{Error, Result, corrupt};
use crate::format::*;
use crate::storage::file::FileStorage;
use crate::storage::registry::{JoinError, ReaderInfo, Registry, fork_generation};
use crate::storage::{Storage, boot_id};
use crate::trie::KeyHasher;
use crate::txn::{
    Durability, ReadTxn, Shared, SkippedCommit, Snapshot, WriteTxn, WriterState, encode_meta,
};

/// A persistent dictionary of byte strings in one memory-mapped file. Cheap to clone; clones
/// share one handle. `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Heap {
    shared: Arc<Shared>,
}

/// How to open a heap; see [`Heap::options`].
#[derive(Clone, Debug)]
pub struct HeapOptions {
    create: bool,
    read_only: bool,
    durability: Durability,
}

impl Default for HeapOptions {
    fn default() -> Self {
        HeapOptions { create: true, read_only: false, durability: Durability::Immediate }
    }
}

/// Compaction rounds at most: each plans the spans to empty and empties them in bounded steps;
/// the large records a round moves into runs it freed may let a next one do more.
const MAX_COMPACT_ROUNDS: usize = 4;

/// What [`Heap::compact`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactStats {
    pub file_size_before: u64,
    pub file_size_after: u64,
    /// Bytes of records moved (nodes included).
    pub moved_bytes: u64,
    /// Write transactions it took.
    pub steps: u64,
}

/// Space and content figures of the latest commit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Length of the file in bytes.
    pub file_size: u64,
    /// Bytes below the allocator's high-water mark.
    pub used_size: u64,
    /// Bytes in records reachable from the latest commit (allocator metadata included).
    pub live_bytes: u64,
    /// Bytes free or awaiting reuse (below `used_size`).
    pub free_bytes: u64,
    /// Part of `free_bytes` freed but not yet reusable: held for snapshots still pinned, or for
    /// the last durable commit (until the next durable commit).
    pub pending_bytes: u64,
    /// Part of `pending_bytes` held only for pinned snapshots: freed after the oldest one, so
    /// released once readers move on (and, for space the last durable commit uses, once a newer
    /// commit is durable).
    pub held_by_readers: u64,
    /// Entries in the map.
    pub entries: u64,
    /// Transaction id of the latest commit.
    pub txn_id: u64,
    /// Transaction id of the last durable commit (where a power loss would reopen the heap).
    pub durable_txn_id: u64,
    /// Oldest snapshot pinned by a live read transaction of any process.
    pub oldest_reader: Option<u64>,
    /// Live read transactions of every process (registered ones; see [`Heap::readers`]).
    pub readers: u64,
    /// Commits newer than the latest usable one that were passed over: a damaged newest meta
    /// slot, or a commit that cannot be trusted after a reboot. Empty in normal operation; a
    /// non-empty list after a crash names a commit that was torn or lost (DESIGN §4.1).
    pub skipped_commits: Vec<SkippedCommit>,
    /// Whether the kernel's boot id could be read. Without it every commit is made durable
    /// ([`Durability::None`] cannot be honoured safely: DESIGN §4.1).
    pub boot_id_known: bool,
}

impl HeapOptions {
    /// Create the file if it does not exist (default: true).
    pub fn create(&mut self, create: bool) -> &mut Self {
        self.create = create;
        self
    }
    /// Open for reading only (default: false).
    pub fn read_only(&mut self, read_only: bool) -> &mut Self {
        self.read_only = read_only;
        self
    }
    /// Default durability of commits (default: [`Durability::Immediate`]).
    pub fn durability(&mut self, durability: Durability) -> &mut Self {
        self.durability = durability;
        self
    }

    /// Open the heap at `path`. O(1): maps the file and reads its header and meta slots.
    pub fn open(&self, path: impl AsRef<Path>) -> Result<Heap> {
        let path = path.as_ref();
        if self.create && !self.read_only && !path.exists() {
            create_file(path)?;
        }
        // A copy replacing the file between our open and our joining it (DESIGN §5.8) sends us
        // round again, to the new file.
        for _ in 0..8 {
            let storage = FileStorage::open(path, self.read_only).map_err(|e| match e {
                Error::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Error::Io(std::io::Error::new(
                        e.kind(),
                        format!(
                            "{}: no such heap file (open with create(true) to make one)",
                            path.display()
                        ),
                    ))
                }
                e => e,
            })?;
            // Before the lock file is made: a refused open leaves nothing behind.
            let header = read_header(&storage, path)?;
            match Registry::open(path, &storage.id, self.read_only) {
                Ok(registry) => {
                    return Heap::from_parts(Arc::new(storage), header, registry, self, boot_id());
                }
                Err(JoinError::Replaced) => continue,
                Err(JoinError::Other(e)) => return Err(e),
            }
        }
        Err(Error::Refused {
            path: path.to_owned(),
            reason: "the file keeps being replaced while it is opened".into(),
        })
    }
}

impl Heap {
    /// Open the heap at `path`, creating it if missing, with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Heap> {
        HeapOptions::default().open(path)
    }

    /// Options for opening a heap.
    pub fn options() -> HeapOptions {
        HeapOptions::default()
    }

    /// A heap over `storage` (the simulated disk, in tests), as a process of boot `boot` opens
    /// it (tests simulate reboots with it).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn from_storage_with_boot(
        storage: Arc<dyn Storage>,
        registry: Registry,
        opts: &HeapOptions,
        path: &Path,
        boot: [u8; 16],
    ) -> Result<Heap> {
        let header = read_header(&*storage, path)?;
        Heap::from_parts(storage, header, registry, opts, boot)
    }

    /// A heap over `storage`, whose validated header is `header`.
    fn from_parts(
        storage: Arc<dyn Storage>,
        header: FileHeader,
        registry: Registry,
        opts: &HeapOptions,
        boot: [u8; 16],
    ) -> Result<Heap> {
        let shared = Arc::new(Shared {
            storage,
            hasher: KeyHasher::new([header.hash_seed[0].get(), header.hash_seed[1].get()]),
            read_only: opts.read_only,
            durability: opts.durability,
            boot,
            registry,
            writer: Arc::new(Mutex::new(WriterState::default())),
            fork_gen: fork_generation(),
            poisoned: AtomicBool::new(false),
            verified: Mutex::new(Vec::new()),
        });
        // Fail now, not at the first read, if no commit can be trusted.
        shared.latest()?;
        Ok(Heap { shared })
    }

    /// Begin a write transaction, waiting while another one runs — including one held by the
    /// calling thread, which would wait for ever: finish or drop it first, or use
    /// [`Heap::try_begin_write`].
    pub fn begin_write(&self) -> Result<WriteTxn> {
        WriteTxn::begin(&self.shared, true)
    }

    /// Begin a write transaction, or fail with [`Error::WriteInProgress`] at once.
    pub fn try_begin_write(&self) -> Result<WriteTxn> {
        WriteTxn::begin(&self.shared, false)
    }

    /// Begin a read transaction on the latest commit.
    pub fn begin_read(&self) -> Result<ReadTxn> {
        ReadTxn::begin(&self.shared)
    }

    /// Make every earlier commit durable (a no-op when the latest already is). Takes the writer
    /// lock like [`Heap::begin_write`].
    pub fn checkpoint(&self) -> Result<()> {
        let mut tx = self.begin_write()?;
        if tx.is_durable_base() {
            return Ok(());
        }
        tx.set_durability(Durability::Immediate);
        tx.commit()
    }

    /// Figures of the latest commit. Pins it for a moment, like a read transaction (so it
    /// fails with [`Error::ReadersFull`] when every reader slot is taken).
    pub fn stats(&self) -> Result<Stats> {
        self.shared.check()?;
        let file_size = self.shared.storage.refresh()?;
        let pins = self.shared.live_pins()?; // before our own pin below
        let rx = self.begin_read()?; // pins the allocator state read below
        let snap = *rx.snapshot();
        let oldest = pins.first().map(|p| p.txn).filter(|&t| t < snap.txn);
        let batches = crate::txn::load_snapshot_alloc(&self.shared, &snap)?.pending_bytes()?;
        let pending_bytes = batches.iter().map(|b| b.1).sum();
        let held_by_readers =
            oldest.map_or(0, |o| batches.iter().filter(|b| b.0 > o).map(|b| b.1).sum());
        let trusted = self.shared.trusted()?;
        let durable = trusted.iter().find(|s| s.durable && s.txn <= snap.txn);
        Ok(Stats {
            file_size,
            used_size: snap.alloc.end,
            live_bytes: snap.alloc.live_bytes,
            free_bytes: snap.alloc.free_bytes,
            pending_bytes,
            held_by_readers,
            entries: snap.entries,
            txn_id: snap.txn.0,
            durable_txn_id: durable.map_or(0, |d| d.txn.0),
            oldest_reader: pins.first().map(|p| p.txn.0),
            readers: pins.len() as u64,
            skipped_commits: self.shared.skipped(&snap, &trusted),
            boot_id_known: self.shared.boot_known(),
        })
    }

    /// The live read transactions of every process that registered one, oldest snapshot first
    /// (read-only handles without write access to the lock file read unregistered; see
    /// README).
    pub fn readers(&self) -> Result<Vec<ReaderInfo>> {
        self.shared.check()?;
        let mut readers = self.shared.registry.readers()?;
        if readers.is_empty() {
            return Ok(readers);
        }
        let rx = match self.begin_read() {
            Ok(rx) => rx, // pins the allocator state read below
            Err(Error::ReadersFull { .. }) => return Ok(readers),
            Err(e) => return Err(e),
        };
        let batches =
            crate::txn::load_snapshot_alloc(&self.shared, rx.snapshot())?.pending_bytes()?;
        for r in &mut readers {
            r.holds_bytes = Some(batches.iter().filter(|b| b.0.0 > r.txn_id).map(|b| b.1).sum());
        }
        Ok(readers)
    }

    /// Pid of the process that last began a write transaction: while a write transaction is
    /// open (`try_begin_write` fails with [`Error::WriteInProgress`]), the one holding it.
    pub fn last_writer_pid(&self) -> Option<u32> {
        self.shared.registry.last_writer_pid()
    }

    /// Write a consistent, compacted copy of the latest commit to `path`, which must not exist.
    /// Runs beside readers and the writer of every process (it holds one read snapshot). The
    /// copy is a normal heap holding only live data; it appears at `path` only once complete
    /// and durable: a crash during the copy leaves nothing there.
    pub fn copy_to(&self, path: impl AsRef<Path>) -> Result<CopyStats> {
        crate::copy::copy_to(self, path.as_ref(), false)
    }

    /// As [`Heap::copy_to`], replacing whatever is at `path` (atomically, by rename).
    pub fn copy_to_overwriting(&self, path: impl AsRef<Path>) -> Result<CopyStats> {
        crate::copy::copy_to(self, path.as_ref(), true)
    }

    /// Move live records out of the file's tail and give the tail back, online: readers of
    /// every process keep their snapshots (their slices stay valid), and the writer lock is
    /// taken in bounded steps (each moves about `max(32 MiB, used / 16)` bytes), so other
    /// writers interleave. Space that pinned snapshots still reach is given back once they
    /// end, by later commits. A heap already within a tenth (plus 1 MiB) of its live bytes is
    /// left as it is. See DESIGN.md §3.3.
    pub fn compact(&self) -> Result<CompactStats> {
        self.compact_with(false)
    }

    /// `compact`; with `always`, even a heap already small enough (tests use it on tiny heaps).
    pub(crate) fn compact_with(&self, always: bool) -> Result<CompactStats> {
        let before = self.stats()?;
        if !always && before.file_size <= before.live_bytes + before.live_bytes / 10 + (1 << 20) {
            // Already within what compaction aims for: nothing to win.
            return Ok(CompactStats {
                file_size_before: before.file_size,
                file_size_after: before.file_size,
                moved_bytes: 0,
                steps: 0,
            });
        }
        let budget = (before.used_size / 16).max(32 << 20);
        let (mut moved, mut steps) = (0, 0);
        // A durable commit that sweeps (and, with `plan`, chooses the spans to empty).
        let sweep = |plan: Option<u64>, shrink_fully: bool| -> Result<crate::alloc::Evacuation> {
            let mut tx = self.begin_write()?;
            tx.set_durability(Durability::Immediate);
            let e = tx.sweep(plan)?;
            tx.shrink_fully = shrink_fully;
            tx.commit()?;
            Ok(e)
        };
        sweep(None, false)?;
        // Where the file could end: the live bytes and a tenth for span headers, partly filled
        // spans and the allocator's own pages.
        let limit =
            (DATA_START + before.live_bytes + before.live_bytes / 10).next_multiple_of(PAGE_SIZE);
        for _round in 0..MAX_COMPACT_ROUNDS {
            let plan = sweep(Some(limit), false)?;
            let mut round = 0;
            let mut at = Some(0);
            while let Some(from) = at {
                let mut tx = self.begin_write()?;
                tx.set_durability(Durability::None);
                let (m, next) = tx.lower_step(from, &plan, budget)?;
                tx.commit()?;
                (round, at, steps) = (round + m, next, steps + 1);
            }
            moved += round;
            // Durable, so that what the moved records left behind can be reused; the next
            // sweeps find the emptied spans and return them to the free runs.
            self.checkpoint()?;
            sweep(None, false)?;
            if round == 0 {
                break;
            }
        }
        // The emptied tail is released by the next durable commits, then given back once no
        // meta slot (and no pinned snapshot) reaches it.
        for i in 0..3 {
            sweep(None, i == 2)?;
        }
        let after = self.stats()?;
        Ok(CompactStats {
            file_size_before: before.file_size,
            file_size_after: after.file_size,
            moved_bytes: moved,
            steps,
        })
    }

    /// The heap file's identity (none for the simulated disk).
    pub(crate) fn file_id(&self) -> Option<crate::storage::file::FileId> {
        self.shared.storage.file_id()
    }

    /// The heap's lock file (`<heap>-lock`), the registry every process sharing it maps.
    pub fn lock_file(&self) -> &Path {
        self.shared.registry.path()
    }

    /// The full integrity walk of the latest commit: every record reachable once or free, every
    /// checksum, every page accounted for. Runs on a pinned snapshot, beside readers and the
    /// writer.
    pub fn check(&self) -> Result<CheckReport> {
        let rx = self.begin_read()?;
        check(&self.shared, rx.snapshot())
    }
}

fn read_header(storage: &dyn Storage, path: &Path) -> Result<FileHeader> {
    let len = storage.len();
    let view = storage.view();
    let not_pheap = |reason| Error::NotAPheap { path: path.to_owned(), reason };
    if len == 0 {
        return Err(not_pheap("the file is empty"));
    }
    let head = view.slice(0, len.min(64), len).expect("inside the file");
    if head.len() < 8 {
        return Err(if MAGIC.starts_with(head) {
            Error::Truncated { len, needed: DATA_START }
        } else {
            not_pheap("wrong magic")
        });
    }
    if head[..8] != MAGIC {
        return Err(not_pheap("wrong magic"));
    }
    if len < 64 {
        return Err(Error::Truncated { len, needed: DATA_START });
    }
    let h = FileHeader::read_from_bytes(head).expect("64 bytes");
    if h.version.get() != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            found: h.version.get(),
            supported: FORMAT_VERSION,
        });
    }
    if h.checksum.get() != h.compute_checksum() {
        return Err(corrupt(0, "header checksum mismatch"));
    }
    if h.page_size.get() as u64 != PAGE_SIZE {
        return Err(corrupt(12, "unsupported page size"));
    }
    if h.flags.get() != 0 {
        return Err(corrupt(32, "unknown header flags"));
    }
    if len < DATA_START {
        return Err(Error::Truncated { len, needed: DATA_START });
    }
    Ok(h)
}

/// The bytes of a new, empty heap: header, meta slot 0 (txn 0, durable), empty slot 1.
pub(crate) fn new_heap_image(boot: &[u8; 16]) -> Result<Vec<u8>> {
    let mut seed = [0u8; 16];
    getrandom::fill(&mut seed).map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
    Ok(new_heap_image_seeded(boot, seed))
}

/// As `new_heap_image`, with the key-hash seed given (tests need runs to repeat exactly).
pub(crate) fn new_heap_image_seeded(boot: &[u8; 16], seed: [u8; 16]) -> Vec<u8> {
    let mut h = FileHeader::read_from_bytes(&[0u8; 64][..]).expect("64 bytes");
    h.magic = MAGIC;
    h.version = FORMAT_VERSION.into();
    h.page_size = (PAGE_SIZE as u32).into();
    h.hash_seed = [
        u64::from_le_bytes(seed[..8].try_into().expect("8")).into(),
        u64::from_le_bytes(seed[8..].try_into().expect("8")).into(),
    ];
    h.checksum = h.compute_checksum().into();
    let mut img = vec![0u8; DATA_START as usize];
    img[..64].copy_from_slice(h.as_bytes());
    let snap = Snapshot {
        txn: TxnId(0),
        root: 0,
        entries: 0,
        slot: 0,
        durable: true,
        same_boot: true,
        alloc: AllocSummary { end: DATA_START, ..AllocSummary::default() },
    };
    let meta = encode_meta(&snap, boot);
    let at = META_OFFSETS[0] as usize;
    img[at..at + META_SIZE].copy_from_slice(&meta);
    img
}

/// The directory holding `path`.
fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// A temporary path in the directory of `path`, hidden, unique to this process and call.
pub(crate) fn temp_beside(path: &Path, what: &str) -> Result<(PathBuf, PathBuf)> {
    let dir = dir_of(path);
    let name = path.file_name().ok_or_else(|| {
        Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "heap path has no file name",
        ))
    })?;
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd).map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
    let tmp = dir.join(format!(
        ".{}.{}-{:x}.{what}",
        name.to_string_lossy(),
        std::process::id(),
        u64::from_le_bytes(rnd)
    ));
    Ok((dir, tmp))
}

/// Temporary files that earlier calls for `path` left behind (a process killed while creating
/// or copying a heap there): `.NAME.PID-RANDOM.tmp` and `.copy` (with its `-lock`) beside it,
/// older than a minute and, for copies, open in no handle. Removes them; returns how many.
pub(crate) fn remove_stale_temps(path: &Path) -> u64 {
    let Some(name) = path.file_name() else { return 0 };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir_of(path)) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else { continue };
        let copy = rest.ends_with(".copy");
        if !(copy || rest.ends_with(".tmp")) {
            continue;
        }
        let p = entry.path();
        let old = std::fs::symlink_metadata(&p).ok().filter(|m| m.is_file()).and_then(|m| {
            Some(m.modified().ok()?.elapsed().ok()? > std::time::Duration::from_secs(60))
        });
        if old != Some(true) {
            continue;
        }
        if copy {
            match std::fs::File::open(&p).map(|f| crate::storage::registry::in_use(&f)) {
                Ok(Ok(false)) => {}
                _ => continue,
            }
            let mut lock = p.clone().into_os_string();
            lock.push("-lock");
            let _ = std::fs::remove_file(lock);
        }
        if std::fs::remove_file(&p).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Create a heap file atomically: write a temporary file, sync it, move it into place (failing
/// harmlessly if another creator won; the file never has a second name), sync the directory.
fn create_file(path: &Path) -> Result<()> {
    remove_stale_temps(path);
    let (dir, tmp) = temp_beside(path, "tmp")?;
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(&new_heap_image(&boot_id())?)?;
        f.sync_all()?;
        match crate::storage::rename_noreplace(&tmp, path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}
