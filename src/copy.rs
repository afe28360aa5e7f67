//! Consistent, compacted copies of a live heap (`Heap::copy_to`).
//!
//! The copy is built from one pinned snapshot into a temporary heap beside the destination, by
//! inserting every entry in hash order (each insert extends the rightmost path of the new trie,
//! so the new file is written front to back), made durable, then published atomically: a rename
//! that fails if the destination exists, or one that replaces it (refused while the destination
//! is a heap in use, whose join lock it holds meanwhile), and a sync of the directory. A crash
//! at any point leaves either nothing or the complete copy at the destination; the temporary
//! files it may leave (`.NAME.PID-RANDOM.copy[-lock]`) are removed by the next copy there.

use crate::{Readable, Writable};
use std::path::Path;

use crate::alloc::{AllocSummary, Allocator, Pager};
use crate::error::corrupt;
use crate::error::{Error, Result};
use crate::format::CLASS_SIZES;
use crate::format::{
    DATA_START, FORMAT_VERSION, NUM_CLASSES, PAGE_SIZE, RUN_HEADER_SIZE, RUN_SLAB,
};
use crate::format::{HEADER_FLAG_SEALED, Kind, MAX_NESTING};
use crate::format::{META_OFFSETS, META_SIZE};
use crate::heap::Heap;
use crate::meta::{Snapshot, digest_of, encode_meta, read_header, read_slots};
use crate::shared::load_snapshot_alloc;
use crate::storage::Storage;
use crate::storage::file::FileId;
use crate::storage::file::FileStorage;
use crate::storage::paths::{remove_stale_temps, temp_beside};
use crate::storage::registry::hold_for_replacing;
use crate::storage::rename_noreplace;
use crate::txn::{Durability, Map, ReadTxn, Value};
use std::sync::Arc;
use zerocopy::IntoBytes;

/// What [`Heap::copy_to`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyStats {
    /// Transaction id of the source snapshot copied.
    pub source_txn_id: u64,
    /// Entries copied.
    pub entries: u64,
    /// Length of the copy in bytes.
    pub file_size: u64,
    /// Temporary files of earlier copies or creations that were killed, found beside the
    /// destination and removed.
    pub stale_removed: u64,
    /// The copy's digest, for a sealed copy ([`Heap::seal_to`]).
    pub digest: Option<[u8; 16]>,
    /// The copy was made by pages (the snapshot's records copied where they lie, its free space
    /// zero), not rebuilt entry by entry (DESIGN §3.4).
    pub by_pages: bool,
}

/// Copy the entry `key` -> `value` of `src` into `dst`: a sub-map with everything in it, a value
/// with its kind and parts. Returns the entries copied, at every level.
pub(crate) fn copy_entry(
    src: Map<'_>,
    key: &[u8],
    value: Value<'_>,
    dst: &mut impl Writable,
    depth: usize,
) -> Result<u64> {
    if value.kind() != Kind::Map {
        let parts = value.parts().collect::<Result<Vec<_>>>()?;
        dst.insert_parts(key, value.kind(), value.inline(), &parts)?;
        return Ok(1);
    }
    if depth >= MAX_NESTING {
        return Err(Error::NestingTooDeep { max: MAX_NESTING });
    }
    let sub = src.map(key)?.ok_or_else(|| crate::error::corrupt(0, "sub-map vanished"))?;
    let mut out = dst.map_mut(key)?;
    let mut n = 1;
    for item in sub.iter() {
        let (k, v) = item?;
        n += crate::trie::one_map_deeper(|| copy_entry(sub, k, v, &mut out, depth + 1))?;
    }
    Ok(n)
}

/// Commit the copy every this many entries (counted at every level, at top-level boundaries),
/// bounding the work of one transaction.
const BATCH: u64 = 1 << 20;

/// The destination as it is before the copy: absent, or (with `overwrite`) a regular file that is
/// neither the source nor a heap in use. Symbolic links are refused, not followed: replacing one
/// would replace the link, and following it is a surprise either way; name the file itself.
fn check_destination(src: &Heap, dest: &Path, overwrite: bool) -> Result<()> {
    let refuse =
        |reason: &str| Err(Error::Refused { path: dest.to_owned(), reason: reason.into() });
    let meta = match dest.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
        Ok(m) => m,
    };
    if meta.file_type().is_symlink() {
        return refuse("the destination is a symbolic link; give the path of the file itself");
    }
    if !meta.is_file() {
        return refuse("the destination exists and is not a regular file");
    }
    if !overwrite {
        return Err(Error::Exists { path: dest.to_owned() });
    }
    if src.file_id().is_some_and(|id| id.same(&FileId::of(&meta))) {
        return refuse("the destination is the heap being copied");
    }
    Ok(())
}

impl Heap {
    /// Write a consistent, compacted copy of the latest commit to `path`, which must not exist.
    /// Runs beside readers and the writer of every process (it holds one read snapshot). The
    /// copy is a normal heap holding only live data; it appears at `path` only once complete
    /// and durable: a crash during the copy leaves nothing there.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
    /// let backup = dir.path().join("backup.pheap");
    /// let stats = heap.copy_to(&backup)?;
    /// assert_eq!(stats.entries, heap.stats()?.entries);
    /// assert!(matches!(heap.copy_to(&backup), Err(pheap::Error::Exists { .. })));
    /// # Ok::<(), pheap::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Exists`] if `path` exists; [`Error::Refused`] for a symbolic link or a special
    /// file there; [`Error::Corrupt`] if the source's records are damaged (nothing is
    /// published); [`Error::Io`] (the destination is then left as it was).
    pub fn copy_to(&self, path: impl AsRef<Path>) -> Result<CopyStats> {
        copy_to(self, path.as_ref(), false, Made::Copy)
    }

    /// A sealed copy (DESIGN §2.1a) of the latest commit at `path`, as [`Heap::copy_to`] makes
    /// it: read-only for good, described by a digest of the whole file (in the header and in
    /// the returned stats), opened without a lock file or any lock (read-only media, shared
    /// file systems), every write refused with [`Error::Sealed`]; [`Heap::check`] verifies the
    /// digest. What a publication ships.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
    /// let stats = heap.seal_to(dir.path().join("v1.pheap"))?;
    /// let sealed = pheap::Heap::open(dir.path().join("v1.pheap"))?;
    /// assert_eq!(sealed.digest(), stats.digest);
    /// assert!(matches!(sealed.begin_write(), Err(pheap::Error::Sealed { .. })));
    /// # Ok::<(), pheap::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Heap::copy_to`].
    pub fn seal_to(&self, path: impl AsRef<Path>) -> Result<CopyStats> {
        copy_to(self, path.as_ref(), false, Made::Sealed)
    }

    /// As [`Heap::seal_to`], but copied by pages where [`Heap::copy_to`] would copy by pages
    /// (DESIGN §3.4): at about a plain copy's speed instead of a tenth of it, and with up to a
    /// quarter of the file free space. Its bytes depend on the commit and the heap's layout, not
    /// on the content alone (two heaps of equal content seal to different digests): for sealed
    /// files that nobody compares across commits, such as a job's pieces of a shard set.
    ///
    /// # Errors
    ///
    /// As [`Heap::copy_to`].
    pub fn seal_by_pages_to(&self, path: impl AsRef<Path>) -> Result<CopyStats> {
        copy_to(self, path.as_ref(), false, Made::SealedByPages)
    }

    /// As [`Heap::copy_to`], replacing whatever is at `path` (atomically, by rename).
    ///
    /// # Errors
    ///
    /// As [`Heap::copy_to`], but an existing regular file is replaced; [`Error::Refused`] when
    /// `path` is the source itself or a heap some handle has open.
    pub fn copy_to_overwriting(&self, path: impl AsRef<Path>) -> Result<CopyStats> {
        copy_to(self, path.as_ref(), true, Made::Copy)
    }
}

/// Seal the heap file at `path` (a finished, synced copy that no handle has open): its latest
/// commit left alone in the meta slots, as a plain durable commit of no boot (the other slots
/// zero), so that the same content sealed twice is the same file; then its digest into the
/// header, the flag set, the header's checksum renewed, synced. Returns the digest.
fn seal_file(path: &Path) -> Result<[u8; 16]> {
    let storage = FileStorage::open(path, false)?;
    let mut h = read_header(&storage, path)?;
    let latest = read_slots(&storage.view(), &[0; 16]).into_iter().max_by_key(|s| s.txn);
    let mut latest = latest.ok_or_else(|| corrupt(META_OFFSETS[0], "no meta slot in a copy"))?;
    if !latest.durable {
        return Err(corrupt(META_OFFSETS[latest.slot], "a copy's last commit is not durable"));
    }
    latest.alloc.one_phase = false;
    for (i, &at) in META_OFFSETS.iter().enumerate() {
        let slot = if i == latest.slot { encode_meta(&latest, &[0; 16]) } else { [0; META_SIZE] };
        storage.write(at, &slot)?;
    }
    // The flag first: the digest covers it (and every header byte but 40..64).
    h.flags = (h.flags.get() | HEADER_FLAG_SEALED).into();
    storage.write(0, h.as_bytes())?;
    let digest = digest_of(&storage)?;
    h.digest = digest;
    h.checksum = h.compute_checksum().into();
    storage.write(0, h.as_bytes())?;
    storage.sync()?;
    Ok(digest)
}

/// What a copy is made as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Made {
    /// A writable copy, by pages where it can be.
    Copy,
    /// A sealed copy, always rebuilt: its bytes depend on the content alone (§2.1a).
    Sealed,
    /// A sealed copy, by pages where it can be.
    SealedByPages,
}

fn copy_to(src: &Heap, dest: &Path, overwrite: bool, made: Made) -> Result<CopyStats> {
    check_destination(src, dest, overwrite)?;
    build_copy(src, dest, made, |tmp, _| {
        if overwrite {
            // Checked again, now for good: a heap in use is not replaced, and none joins the old
            // file while the guard holds its join lock.
            check_destination(src, dest, overwrite)?;
            let _guard = match hold_for_replacing(dest) {
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => None,
                r => Some(r?),
            };
            std::fs::rename(tmp, dest)?;
        } else {
            rename_noreplace(tmp, dest).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Error::Exists { path: dest.to_owned() },
                _ => e.into(),
            })?;
        }
        Ok(())
    })
}

/// Build a copy (made as `made`) of `src`'s latest commit in a temporary file beside `dest`
/// (named after it: `.NAME.PID-RANDOM.copy`, removed whatever happens; those of killed copies
/// are removed first), make it durable, then let `place` move it to its name (the directory is
/// synced after).
pub(crate) fn build_copy(
    src: &Heap,
    dest: &Path,
    made: Made,
    place: impl FnOnce(&Path, &CopyStats) -> Result<()>,
) -> Result<CopyStats> {
    let seal = made != Made::Copy;
    let stale_removed = remove_stale_temps(dest);
    let rx = src.begin_read()?;
    let (dir, tmp) = temp_beside(dest, "copy")?;
    let tmp_lock = {
        let mut name = tmp.file_name().expect("a file name").to_owned();
        name.push("-lock");
        tmp.with_file_name(name)
    };
    let result = (|| -> Result<CopyStats> {
        let by_pages = if made == Made::Sealed { None } else { copy_pages(&rx, &tmp)? };
        let n = match by_pages {
            Some(n) => n,
            None => rebuild(src, &rx, &tmp)?,
        };
        let digest = if seal { Some(seal_file(&tmp)?) } else { None };

        let file = std::fs::File::open(&tmp)?;
        file.sync_all()?;
        let file_size = file.metadata()?.len();
        let stats = CopyStats {
            source_txn_id: rx.txn_id(),
            entries: n,
            file_size,
            stale_removed,
            digest,
            by_pages: by_pages.is_some(),
        };
        place(&tmp, &stats)?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(stats)
    })();
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_file(&tmp_lock);
    result
}

/// The snapshot's entries inserted, in hash order, into a new heap at `tmp` (with the source's
/// key-hash seed: the same trie shape), checkpointed and closed. Returns the entries copied.
fn rebuild(src: &Heap, rx: &ReadTxn, tmp: &Path) -> Result<u64> {
    let out = Heap::options().durability(Durability::None).seeded(src.key_seed()?).open(tmp)?;
    let mut tx = out.begin_write()?;
    let (mut n, mut batch) = (0u64, 0u64);
    for item in rx.iter() {
        let (k, v) = item?;
        batch += copy_entry(rx.as_map()?, k, v, &mut tx, 0)?;
        n += 1;
        if batch >= BATCH {
            tx.commit()?;
            tx = out.begin_write()?;
            batch = 0;
        }
    }
    tx.commit()?;
    out.checkpoint()?;
    let copied = out.stats()?.entries;
    let expected = rx.len()? as u64;
    if n != expected || copied != n {
        return Err(Error::CopyIncomplete { expected, copied });
    }
    drop(out); // gives back the growth slack
    Ok(n)
}

/// A copy by pages is made when at most this fraction (1/FREE_LIMIT) of the source's data pages
/// is free space; a sparser heap is rebuilt, so that a copy is never mostly zeros.
const FREE_LIMIT: u64 = 4;

/// Copy by pages (DESIGN §3.4): the pinned snapshot's header, its commit as the only meta slot,
/// and every byte of `[DATA_START, end)` that the snapshot's allocator does not count free,
/// copied where it lies into a new file at `tmp` (allocated whole, so free space reads as
/// zeros). Free space is never read: the writer may be reusing it (I6). `None`, with nothing
/// created, when the source is of an older format version or more than a quarter free.
/// Returns the entries copied (the snapshot's).
fn copy_pages(rx: &ReadTxn, tmp: &Path) -> Result<Option<u64>> {
    let shared = rx.shared();
    let snap = *rx.snapshot();
    let end = snap.alloc.end;
    let mut header = read_header(&*shared.storage, &shared.path)?;
    if header.version.get() != FORMAT_VERSION
        || snap.alloc.free_bytes > end.saturating_sub(DATA_START) / FREE_LIMIT
    {
        return Ok(None);
    }
    // The allocator of the pinned snapshot: its chunks and run headers stay intact while the
    // snapshot is pinned (I4, I5); its blob too, but for a staged commit's, which the next
    // commit may reuse at once (§4.3): read then (a checksum fails), the copy is rebuilt.
    let Ok((alloc, inv)) = load_snapshot_alloc(shared, &snap).and_then(|a| {
        let inv = a.inventory()?;
        Ok((a, inv))
    }) else {
        return Ok(None);
    };
    if inv.end != end {
        return Err(corrupt(META_OFFSETS[snap.slot], "allocator end differs from the commit's"));
    }
    let mut free: Vec<(u64, u64)> = Vec::with_capacity(inv.free.len() + inv.free_runs.len());
    free.extend(inv.free.iter().map(|&(o, s)| (o, o.saturating_add(s))));
    for &(o, p) in inv.free_runs.iter().chain(&inv.pending_runs) {
        free.push((o, o.saturating_add(p.saturating_mul(PAGE_SIZE))));
    }
    // The slots of each span being carved that no commit has used yet.
    for (&span, &next) in &inv.cursors {
        let h = alloc.run_header(span)?;
        let c = h.class.get() as usize;
        if h.kind.get() != RUN_SLAB || c >= NUM_CLASSES {
            return Err(corrupt(span, "slab cursor on a run that is not a slab"));
        }
        let first = span + RUN_HEADER_SIZE + u64::from(next) * CLASS_SIZES[c] as u64;
        free.push((first, span + h.pages.get() as u64 * PAGE_SIZE));
    }
    free.sort_unstable();

    std::fs::OpenOptions::new().write(true).create_new(true).open(tmp)?;
    let out = FileStorage::open(tmp, false)?;
    out.grow(end)?;
    // A writable heap of no history: not sealed, its one commit durable and two-phase, of no
    // boot (as a sealed copy's, §2.1a).
    header.flags = 0.into();
    header.digest = [0; 16];
    header.checksum = header.compute_checksum().into();
    out.write(0, header.as_bytes())?;
    let meta = Snapshot {
        slot: 0,
        durable: true,
        alloc: AllocSummary { one_phase: false, ..snap.alloc },
        ..snap
    };
    out.write(META_OFFSETS[0], &encode_meta(&meta, &[0; 16]))?;

    // The ranges between free extents, file to file.
    let mut at = DATA_START;
    let mut extents = free.into_iter().peekable();
    while at < end {
        while let Some(&(_, e)) = extents.peek()
            && e <= at
        {
            extents.next();
        }
        match extents.peek() {
            Some(&(s, e)) if s <= at => at = e.min(end),
            next => {
                let to = next.map_or(end, |&(s, _)| s.min(end));
                shared.storage.copy_range(at, to - at, &out)?;
                at = to;
            }
        }
    }
    // The blob as copied is the one listed above (a staged commit's may have been reused
    // meanwhile); else the copy, whose writer could not load its allocator, is rebuilt.
    let out: Arc<dyn Storage> = Arc::new(out);
    let copied = Allocator::load(Pager::new(out.clone()), &snap.alloc).and_then(|a| a.inventory());
    if !copied.is_ok_and(|c| c.free_runs == inv.free_runs && c.free.len() == inv.free.len()) {
        drop(out);
        std::fs::remove_file(tmp)?;
        return Ok(None);
    }
    out.sync()?;
    Ok(Some(snap.map.entries))
}

#[cfg(test)]
mod tests {
    use crate::Heap;
    use crate::prelude::*;
    use std::os::unix::fs::FileExt;

    /// A copy by pages needs the snapshot's allocator blob; one that does not load (damaged, or a
    /// staged commit's reused by the next commit, §4.3) makes the copy a rebuilt one, never a
    /// copy naming a blob that fails.
    #[test]
    fn a_blob_that_does_not_load_makes_the_copy_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.pheap");
        let heap = Heap::open(&path).unwrap();
        let mut tx = heap.begin_write().unwrap();
        for i in 0..5_000u32 {
            tx.insert(i.to_be_bytes(), vec![i as u8; (i % 300) as usize]).unwrap();
        }
        tx.commit().unwrap();
        let first = heap.copy_to(dir.path().join("b.pheap")).unwrap();
        assert!(first.by_pages);
        let blob = heap.begin_read().unwrap().snapshot().alloc.blob;
        assert_ne!(blob, 0);
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0xA5; 32], blob + crate::format::RUN_HEADER_SIZE + 8).unwrap();
        let stats = heap.copy_to(dir.path().join("c.pheap")).unwrap();
        assert!(!stats.by_pages);
        let copy = Heap::open(dir.path().join("c.pheap")).unwrap();
        assert_eq!(copy.stats().unwrap().entries, 5_000);
        copy.check().unwrap();
        let mut tx = copy.begin_write().unwrap();
        tx.insert(b"more", b"x").unwrap();
        tx.commit().unwrap();
    }
}
