//! `Heap`: opening, creating, and the handle the public API hangs on.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use parking_lot::Mutex;
use thread_local::ThreadLocal;

use crate::check::{CheckReport, check};
use crate::error::{Error, Result};
use crate::format::*;
use crate::meta::{SkippedCommit, new_heap_image, read_header};
use crate::shared::{Group, Shared, WriterState, load_snapshot_alloc};
use crate::storage::file::FileStorage;
use crate::storage::fork::fork_generation;
use crate::storage::paths::{remove_stale_temps, temp_beside};
use crate::storage::registry::{JoinError, ReaderInfo, Registry};
use crate::storage::{Storage, boot_id};
use crate::trie::KeyHasher;
use crate::txn::{Durability, ReadTxn, SharedRead, Wait, WriteTxn};

/// A persistent dictionary of byte strings in one memory-mapped file. Cheap to clone; clones
/// share one handle. `Send + Sync`.
///
/// Any number of threads and processes may open the same file: one write transaction at a time
/// across all of them, any number of read transactions, readers never blocked.
///
/// ```
/// # use pheap::prelude::*;
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("data.pheap");
/// let heap = pheap::Heap::open(&path)?;
/// let mut tx = heap.begin_write()?;
/// tx.insert(b"answer", b"42")?;
/// tx.commit()?;
/// drop(heap);
///
/// // Reopening is O(1): nothing is loaded.
/// let heap = pheap::Heap::open(&path)?;
/// assert_eq!(heap.begin_read()?.get(b"answer")?, Some(&b"42"[..]));
/// # Ok::<(), pheap::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Heap {
    shared: Arc<Shared>,
    /// Counts the handle's `Heap`s (not its transactions): the last one to drop ends the
    /// threads' read contexts, which own `shared` (see [`Shared::thread_readers`]).
    _handles: Arc<Handles>,
}

/// Dropped with the last [`Heap`] of a handle.
#[derive(Debug)]
struct Handles(Arc<Shared>);

impl Drop for Handles {
    fn drop(&mut self) {
        for local in self.0.thread_readers.iter() {
            local.lock().ctx = None;
        }
    }
}

/// How to open a heap; see [`Heap::options`].
///
/// ```
/// use pheap::{Durability, Heap};
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("data.pheap");
/// // Commits visible at once and safe from a process crash; `checkpoint` makes them durable.
/// let heap = Heap::options().durability(Durability::None).open(&path)?;
/// # drop(heap);
/// // An existing heap, for reading only.
/// let reader = Heap::options().create(false).read_only(true).open(&path)?;
/// # Ok::<(), pheap::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct HeapOptions {
    create: bool,
    read_only: bool,
    durability: Durability,
    /// The key-hash seed of a heap this open creates, instead of a random one (a copy keeps its
    /// source's; fuzzing builds: runs must repeat).
    hash_seed: Option<[u8; 16]>,
}

impl Default for HeapOptions {
    fn default() -> Self {
        HeapOptions {
            create: true,
            read_only: false,
            durability: Durability::Immediate,
            hash_seed: None,
        }
    }
}

/// Space and content figures of the latest commit (`serde::Serialize` with the `serde`
/// feature: the CLI's `stat --json` and the Python package's `stats()` are this, field for
/// field).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
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
    /// The format version in the file's header: that of the build that created it (this build
    /// writes [`crate::FORMAT_VERSION`] and extends older files as they are).
    pub format_version: u32,
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

    /// The key-hash seed of a heap created by this open, instead of a random one: fuzz targets
    /// derive it from their input, so that every input replays exactly (feature `fuzzing`).
    #[cfg(any(test, feature = "fuzzing"))]
    #[doc(hidden)]
    pub fn hash_seed(&mut self, seed: [u8; 16]) -> &mut Self {
        self.seeded(seed)
    }

    /// The key-hash seed of a heap created by this open (a copy keeps its source's).
    pub(crate) fn seeded(&mut self, seed: [u8; 16]) -> &mut Self {
        self.hash_seed = Some(seed);
        self
    }

    /// Open the heap at `path`. O(1): maps the file and reads its header and meta slots. Creates
    /// the file first (atomically: a complete empty heap appears under the name, or nothing)
    /// when `create` is set and it does not exist.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] without `create`; [`Error::NotAPheap`],
    /// [`Error::UnsupportedVersion`], [`Error::Truncated`] or [`Error::Corrupt`] for a file that
    /// is not a sound heap; [`Error::Refused`] for a setup that would lose data (a hard-linked
    /// heap, a lock file other handles do not share: DESIGN §5.8); [`Error::LockFile`] when the
    /// lock file cannot be used; [`Error::Io`] from the operating system.
    pub fn open(&self, path: impl AsRef<Path>) -> Result<Heap> {
        let path = path.as_ref();
        if self.create && !self.read_only && !path.exists() {
            let image = match self.hash_seed {
                Some(seed) => crate::meta::new_heap_image_seeded(&boot_id(), seed),
                None => new_heap_image(&boot_id())?,
            };
            create_file(path, &image)?;
        }
        // A copy replacing the file between our open and our joining it (DESIGN §5.8) sends us
        // round again, to the new file.
        for _ in 0..8 {
            let storage = FileStorage::open(path, self.read_only).or_else(|e| match e {
                Error::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(Error::NotFound { path: path.to_owned() })
                }
                // Read-only media or a file without write permission: a sealed file opens
                // read-only anyway; any other heap gets the error of its writable open.
                Error::Io(e) if !self.read_only && opens_sealed_read_only(&e, path) => {
                    FileStorage::open(path, true)
                }
                e => Err(e),
            })?;
            // Before the lock file is made: a refused open leaves nothing behind.
            let header = read_header(&storage, path)?;
            let (storage, registry) = if header.sealed() {
                // Read-only for good: no lock file, no registration, no lock (read-only media,
                // shared file systems whose locks cannot be trusted); nothing can change it.
                let storage = if self.read_only { storage } else { FileStorage::open(path, true)? };
                storage.read_in_large_folios();
                (storage, Registry::sealed(path))
            } else {
                let real = storage.canonical_path(path)?;
                match Registry::open(&real, &storage.id, self.read_only) {
                    Ok(registry) => (storage, registry),
                    Err(JoinError::Replaced) => continue,
                    Err(JoinError::Other(e)) => return Err(e),
                }
            };
            return Heap::from_parts(Arc::new(storage), header, registry, self, path, boot_id());
        }
        Err(Error::Refused {
            path: path.to_owned(),
            reason: "the file keeps being replaced while it is opened".into(),
        })
    }
}

impl Heap {
    /// The path the heap was opened at.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Open the heap at `path`, creating it if missing, with default options (durable commits,
    /// writable). See the example on [`Heap`].
    ///
    /// # Errors
    ///
    /// As [`HeapOptions::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Heap> {
        HeapOptions::default().open(path)
    }

    /// Options for opening a heap (see [`HeapOptions`]).
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
        Heap::from_parts(storage, header, registry, opts, path, boot)
    }

    /// A heap over `storage`, whose validated header is `header`.
    fn from_parts(
        storage: Arc<dyn Storage>,
        header: FileHeader,
        registry: Registry,
        opts: &HeapOptions,
        path: &Path,
        boot: [u8; 16],
    ) -> Result<Heap> {
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            format_version: header.version.get(),
            storage,
            hasher: KeyHasher::new([header.hash_seed[0].get(), header.hash_seed[1].get()]),
            read_only: opts.read_only || header.sealed(),
            sealed: header.sealed(),
            digest: header.sealed().then_some(header.digest),
            durability: opts.durability,
            boot,
            registry,
            writer: Arc::new(Mutex::new(WriterState::default())),
            group: Group::default(),
            fork_gen: fork_generation(),
            poisoned: AtomicBool::new(false),
            verified: Mutex::new(Vec::new()),
            #[cfg(test)]
            settles: Default::default(),
            latest_cache: Mutex::new(None),
            thread_readers: ThreadLocal::new(),
        });
        // Fail now, not at the first read, if no commit can be trusted.
        shared.latest()?;
        Ok(Heap { _handles: Arc::new(Handles(shared.clone())), shared })
    }

    /// Begin a write transaction, waiting while another one runs — including one held by the
    /// calling thread, which would wait for ever: finish or drop it first, or use
    /// [`Heap::try_begin_write`].
    ///
    /// ```
    /// # use pheap::prelude::*;
    /// # let dir = tempfile::tempdir()?;
    /// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
    /// let mut tx = heap.begin_write()?;
    /// tx.insert(b"k", b"v")?;
    /// tx.commit()?; // durable once it returns (with the default durability)
    /// # Ok::<(), pheap::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::ReadOnly`] on a read-only handle; [`Error::Poisoned`] after a failed write or
    /// sync of this handle; [`Error::Forked`] in a forked child;
    /// [`Error::DiscardedCommitPinned`] while a reader holds a commit a failed sync discarded;
    /// [`Error::Corrupt`] if the latest commit's allocator state is damaged; [`Error::Io`].
    pub fn begin_write(&self) -> Result<WriteTxn> {
        WriteTxn::begin(&self.shared, Wait::Forever)
    }

    /// Begin a write transaction, or fail with [`Error::WriteInProgress`] at once.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
    /// let tx = heap.begin_write()?;
    /// assert!(matches!(heap.try_begin_write(), Err(pheap::Error::WriteInProgress)));
    /// # Ok::<(), pheap::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::WriteInProgress`] while any handle of any process holds a write transaction;
    /// otherwise as [`Heap::begin_write`].
    pub fn try_begin_write(&self) -> Result<WriteTxn> {
        WriteTxn::begin(&self.shared, Wait::No)
    }

    /// Begin a write transaction, waiting at most `timeout` for the writer lock (another
    /// thread's or process's transaction to end).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
    /// use std::time::Duration;
    /// let tx = heap.begin_write()?;
    /// let other = heap.clone();
    /// let waited = std::thread::spawn(move || other.begin_write_timeout(Duration::from_millis(50)));
    /// assert!(matches!(waited.join().unwrap(), Err(pheap::Error::WriteInProgress)));
    /// drop(tx);
    /// assert!(heap.begin_write_timeout(Duration::from_millis(50)).is_ok());
    /// # Ok::<(), pheap::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::WriteInProgress`] if the lock was still held after `timeout`; otherwise as
    /// [`Heap::begin_write`].
    pub fn begin_write_timeout(&self, timeout: std::time::Duration) -> Result<WriteTxn> {
        let deadline = std::time::Instant::now().checked_add(timeout);
        WriteTxn::begin(&self.shared, deadline.map_or(Wait::Forever, Wait::Until))
    }

    /// Bring the whole heap (its latest commit's every byte) into the page cache, in 8 MiB
    /// requests, at the disk's sequential speed: what a server calls after a reboot, before
    /// its first lookups (cold lookups otherwise wait on the disk, DESIGN §4.6a). Returns the
    /// bytes brought in. Safe beside writers of any process (the range read is pinned). A
    /// sealed heap is read into 2 MiB folios where the kernel has them, which every process
    /// then maps with one page-table entry per 2 MiB. One sub-map alone:
    /// [`crate::Readable::prefetch`]. In the background, on a clone of the handle:
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
    /// let warming = std::thread::spawn({
    ///     let heap = heap.clone();
    ///     move || heap.prefetch()
    /// });
    /// // ... serve requests meanwhile ...
    /// let bytes = warming.join().expect("the prefetch thread")?;
    /// # assert!(bytes > 0);
    /// # Ok::<(), pheap::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Heap::begin_read`].
    pub fn prefetch(&self) -> Result<u64> {
        self.prefetch_with(|_, _| {})
    }

    /// As [`Heap::prefetch`], calling `progress(done, total)` after each request (in bytes).
    ///
    /// # Errors
    ///
    /// As [`Heap::begin_read`].
    pub fn prefetch_with(&self, mut progress: impl FnMut(u64, u64)) -> Result<u64> {
        const REQUEST: u64 = 8 << 20;
        // The pin keeps the file from being cut below the snapshot's end while it is read (I12).
        let rx = self.begin_read()?;
        let end = rx.snapshot().alloc.end;
        let mut at = 0;
        while at < end {
            let n = REQUEST.min(end - at);
            self.shared.storage.prefetch(at, n);
            at += n;
            progress(at, end);
        }
        Ok(end)
    }

    /// Begin a read transaction on the latest commit. Never waits for the writer.
    ///
    /// ```
    /// # use pheap::prelude::*;
    /// # let dir = tempfile::tempdir()?;
    /// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
    /// let rx = heap.begin_read()?;
    /// let mut tx = heap.begin_write()?;
    /// tx.insert(b"k", b"new")?;
    /// tx.commit()?;
    /// assert_eq!(rx.get(b"k")?, None); // the snapshot it began on
    /// assert_eq!(heap.begin_read()?.get(b"k")?, Some(&b"new"[..]));
    /// # Ok::<(), pheap::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::ReadersFull`] when every reader slot is taken; [`Error::Poisoned`],
    /// [`Error::Forked`]; [`Error::Corrupt`] or [`Error::Truncated`] if no commit can be
    /// trusted; [`Error::Io`].
    pub fn begin_read(&self) -> Result<ReadTxn> {
        ReadTxn::begin(&self.shared)
    }

    /// Settling syncs this handle made (DESIGN §4.6, S2).
    #[cfg(test)]
    pub(crate) fn settles(&self) -> u64 {
        self.shared.settles.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The handle's group commit as tests watch it: a sync in flight, and the staged commit.
    #[cfg(test)]
    pub(crate) fn group_pending(&self) -> (bool, Option<u64>) {
        let g = self.shared.group.lock();
        (g.syncing, g.staged.map(|s| s.txn.0))
    }

    /// Begin a read transaction that can be shared ([`SharedRead`]: `Clone`, `Send + Sync`, and
    /// the source of handles that own their snapshot).
    ///
    /// # Errors
    ///
    /// As [`Heap::begin_read`].
    pub fn begin_read_shared(&self) -> Result<SharedRead> {
        self.begin_read().map(SharedRead::from)
    }

    /// Make every earlier commit durable (a no-op when the latest already is). Takes the writer
    /// lock like [`Heap::begin_write`].
    ///
    /// ```
    /// # use pheap::prelude::*;
    /// use pheap::{Durability, Heap};
    /// # let dir = tempfile::tempdir()?;
    /// let heap = Heap::options().durability(Durability::None).open(dir.path().join("h"))?;
    /// for i in 0..100u32 {
    ///     let mut tx = heap.begin_write()?;
    ///     tx.insert(&i.to_le_bytes(), b"fast")?;
    ///     tx.commit()?; // no sync
    /// }
    /// heap.checkpoint()?; // one sync: all 100 survive a power loss from here
    /// assert_eq!(heap.stats()?.durable_txn_id, heap.stats()?.txn_id);
    /// # Ok::<(), pheap::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Heap::begin_write`]; a failed sync is [`Error::Io`] and poisons the handle.
    pub fn checkpoint(&self) -> Result<()> {
        let mut tx = self.begin_write()?;
        if tx.is_durable_base() {
            return Ok(());
        }
        tx.set_durability(Durability::Immediate);
        tx.commit()
    }

    /// Figures of the latest commit. Pins it for a moment, like a read transaction.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
    /// let s = heap.stats()?;
    /// assert_eq!(s.entries, 0);
    /// assert!(s.skipped_commits.is_empty()); // no commit was lost to a crash
    /// # Ok::<(), pheap::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Heap::begin_read`] ([`Error::ReadersFull`] when every reader slot is taken), and
    /// [`Error::Corrupt`] if the commit's allocator state is damaged.
    pub fn stats(&self) -> Result<Stats> {
        self.shared.check()?;
        let file_size = self.shared.storage.refresh()?;
        let pins = self.shared.live_pins()?; // before our own pin below
        let rx = self.begin_read()?; // pins the allocator state read below
        let snap = *rx.snapshot();
        let oldest = pins.first().map(|p| p.txn).filter(|&t| t < snap.txn);
        let batches = load_snapshot_alloc(&self.shared, &snap)?.pending_bytes()?;
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
            entries: snap.map.entries,
            txn_id: snap.txn.0,
            durable_txn_id: durable.map_or(0, |d| d.txn.0),
            oldest_reader: pins.first().map(|p| p.txn.0),
            readers: pins.len() as u64,
            skipped_commits: self.shared.skipped(&snap, &trusted),
            boot_id_known: self.shared.boot_known(),
            format_version: self.shared.format_version,
        })
    }

    /// The live read transactions of every process that registered one, oldest snapshot first
    /// (read-only handles without write access to the lock file read unregistered; see
    /// README).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
    /// let rx = heap.begin_read()?;
    /// let readers = heap.readers()?;
    /// assert_eq!(readers.len(), 1);
    /// assert_eq!(readers[0].pid, std::process::id());
    /// # Ok::<(), pheap::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`], [`Error::Forked`]; [`Error::Corrupt`] if the latest commit's
    /// allocator state is damaged; [`Error::Io`].
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
        let batches = load_snapshot_alloc(&self.shared, rx.snapshot())?.pending_bytes()?;
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

    /// Is a write transaction of another handle (of this or another process) in progress now?
    /// `Some(pid)` of the process that began it (as [`Heap::last_writer_pid`] records it; 0
    /// where unknown), `None` if there is none. A snapshot: it may end the next moment.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the lock cannot be queried.
    pub fn writer_in_progress(&self) -> Result<Option<u32>> {
        Ok(match self.shared.registry.writer_active()? {
            Some(true) => Some(self.last_writer_pid().unwrap_or(0)),
            _ => None,
        })
    }

    /// The heap file's identity (none for the simulated disk).
    pub(crate) fn file_id(&self) -> Option<crate::storage::file::FileId> {
        self.shared.storage.file_id()
    }

    /// The heap's lock file (`<heap>-lock`), the registry every process sharing it maps. Never
    /// delete it while the heap is in use.
    pub fn lock_file(&self) -> &Path {
        self.shared.registry.path()
    }

    /// The full integrity walk of the latest commit: every record reachable once or free, every
    /// checksum, every page accounted for. Runs on a pinned snapshot, beside readers and the
    /// writer.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
    /// let report = heap.check()?;
    /// assert_eq!(report.leaves, report.entries);
    /// # Ok::<(), pheap::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] naming the first damage found (its offset and what failed; for a
    /// sealed heap, first a digest that does not match the file's bytes); otherwise as
    /// [`Heap::begin_read`].
    pub fn check(&self) -> Result<CheckReport> {
        let rx = self.begin_read()?;
        if self.shared.sealed {
            self.verify_digest()?;
        }
        check(&self.shared, rx.snapshot())
    }

    /// Verify a sealed heap's digest against its bytes (reads the whole file, nothing else: a
    /// download is checked with it before it is trusted). Returns the digest.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] (offset 40) when the bytes do not match the digest;
    /// [`Error::Refused`] for a heap that is not sealed; [`Error::Io`] from reading.
    pub fn verify_digest(&self) -> Result<[u8; 16]> {
        let Some(want) = self.shared.digest else {
            return Err(Error::Refused {
                path: self.shared.path.clone(),
                reason: "the heap is not sealed: it has no digest to verify".into(),
            });
        };
        if crate::meta::digest_of(&*self.shared.storage)? != want {
            return Err(crate::error::corrupt(
                40,
                "the sealed heap's bytes do not match its digest",
            ));
        }
        Ok(want)
    }

    /// Is the heap sealed (a copy made by [`Heap::seal_to`]: read-only for good)?
    pub fn sealed(&self) -> bool {
        self.shared.sealed
    }

    /// A sealed heap's digest (DESIGN §2.1a): xxh3-128 of the whole file, its header's bytes
    /// 40..64 taken as zeros; `None` for a heap that is not sealed. [`Heap::check`] verifies it.
    pub fn digest(&self) -> Option<[u8; 16]> {
        self.shared.digest
    }

    /// The key-hash seed in the file's header (a copy is created with it).
    pub(crate) fn key_seed(&self) -> Result<[u8; 16]> {
        let h = read_header(&*self.shared.storage, &self.shared.path)?;
        let mut seed = [0u8; 16];
        seed[..8].copy_from_slice(&h.hash_seed[0].get().to_le_bytes());
        seed[8..].copy_from_slice(&h.hash_seed[1].get().to_le_bytes());
        Ok(seed)
    }
}

/// After a writable open of `path` failed with `e`: is it a file that cannot be opened for
/// writing (read-only media, no write permission) and opens read-only as a sealed heap?
fn opens_sealed_read_only(e: &std::io::Error, path: &Path) -> bool {
    let denied =
        e.kind() == std::io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::EROFS);
    denied
        && FileStorage::open(path, true)
            .and_then(|s| read_header(&s, path))
            .is_ok_and(|h| h.sealed())
}

/// Create a heap file atomically: write a temporary file, sync it, move it into place (failing
/// harmlessly if another creator won; the file never has a second name), sync the directory.
fn create_file(path: &Path, image: &[u8]) -> Result<()> {
    remove_stale_temps(path);
    let (dir, tmp) = temp_beside(path, "tmp")?;
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(image)?;
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
