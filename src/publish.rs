//! Publications (DESIGN §9): a sealed copy of a heap in a directory under its digest's name,
//! described by `manifest.json`, written last.
//!
//! A reader that reads the manifest sees the old publication or the new one, never a mix: the
//! data file is in place and durable before the manifest names it, and the manifest replaces the
//! old one by an atomic rename. The same content publishes to the same file name (sealing is
//! deterministic, §2.1a), so publishing again writes nothing new. Object stores are reached by
//! the Python package (fsspec), which builds the same manifest with [`manifest_json`].

use std::path::Path;

use crate::copy::{Made, build_copy};
use crate::error::Result;
use crate::format::{FORMAT_VERSION, digest_hex};
use crate::heap::Heap;
use crate::storage::paths::{remove_stale_temps, temp_beside};
use crate::storage::rename_noreplace;

/// The manifest's file name in a publication's directory.
pub const MANIFEST_NAME: &str = "manifest.json";
/// The manifest format this build writes (and the newest it reads).
pub const MANIFEST_VERSION: u32 = 1;

/// What a publication holds, as its manifest records it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishStats {
    /// The sealed file's digest (DESIGN §2.1a).
    pub digest: [u8; 16],
    /// The data file's name in the directory: `<digest hex>.pheap`.
    pub file: String,
    /// The data file's length in bytes.
    pub size: u64,
    /// Entries at the top level (a map counts as one).
    pub entries: u64,
    /// Was the data file written (false: the directory already held this content)?
    pub file_written: bool,
    /// Was the manifest written (false: it already named this content)?
    pub manifest_written: bool,
}

/// The data file name of a publication of the heap with `digest`.
pub fn data_file_name(digest: &[u8; 16]) -> String {
    format!("{}.pheap", digest_hex(digest))
}

/// A publication's manifest (DESIGN §9.1), as the bytes of `manifest.json`. `pickles` is the
/// survey of the heap's pickle fragments, a JSON object (the Python package makes it), or
/// `None` when not surveyed (written `null`: a reader cannot know).
pub fn manifest_json(digest: &[u8; 16], size: u64, entries: u64, pickles: Option<&str>) -> String {
    format!(
        concat!(
            "{{\n",
            "  \"format\": \"pheap-publication\",\n",
            "  \"version\": {version},\n",
            "  \"file\": \"{file}\",\n",
            "  \"digest\": \"{digest}\",\n",
            "  \"size\": {size},\n",
            "  \"entries\": {entries},\n",
            "  \"heap_format\": {heap_format},\n",
            "  \"pheap_version\": \"{pheap_version}\",\n",
            "  \"pickles\": {pickles}\n",
            "}}\n"
        ),
        version = MANIFEST_VERSION,
        file = data_file_name(digest),
        digest = digest_hex(digest),
        size = size,
        entries = entries,
        heap_format = FORMAT_VERSION,
        pheap_version = env!("CARGO_PKG_VERSION"),
        pickles = pickles.unwrap_or("null"),
    )
}

/// Publish a sealed copy of `heap`'s latest commit into the directory `dir` (created if
/// missing): `survey` looks at the sealed file before it is placed and returns the manifest's
/// `pickles` object (or `None`).
pub fn publish_with(
    heap: &Heap,
    dir: &Path,
    survey: impl FnOnce(&Path) -> Result<Option<String>>,
) -> Result<PublishStats> {
    std::fs::create_dir_all(dir)?;
    let mut out = None;
    // The copy's temporaries are named after a file that is never created.
    build_copy(heap, &dir.join("publishing.pheap"), Made::Sealed, |tmp, stats| {
        let digest = stats.digest.expect("a sealed copy");
        let pickles = survey(tmp)?;
        let file = data_file_name(&digest);
        let file_written = place_data(tmp, &dir.join(&file))?;
        let manifest = manifest_json(&digest, stats.file_size, stats.entries, pickles.as_deref());
        let manifest_written = write_manifest(dir, &manifest)?;
        out = Some(PublishStats {
            digest,
            file,
            size: stats.file_size,
            entries: stats.entries,
            file_written,
            manifest_written,
        });
        Ok(())
    })?;
    Ok(out.expect("placed"))
}

/// Move the sealed file `tmp` to `dest`, unless a sound file of the same digest is there already
/// (then `tmp` is left to be removed). A damaged one is replaced: a reader that has it open keeps
/// its own. Returns whether `tmp` was moved.
fn place_data(tmp: &Path, dest: &Path) -> Result<bool> {
    match rename_noreplace(tmp, dest) {
        Ok(()) => return Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.into()),
    }
    let sound = Heap::options().read_only(true).create(false).open(dest).and_then(|h| {
        let want = Heap::options().read_only(true).create(false).open(tmp)?.digest();
        Ok(h.digest() == want && h.verify_digest().is_ok())
    });
    if sound? {
        return Ok(false);
    }
    std::fs::rename(tmp, dest)?;
    Ok(true)
}

/// Replace `dir`'s manifest with `text` atomically (a temporary file beside it, synced, renamed
/// over it, the directory synced), unless it holds exactly that. Returns whether it was written.
fn write_manifest(dir: &Path, text: &str) -> Result<bool> {
    let path = dir.join(MANIFEST_NAME);
    match std::fs::read(&path) {
        Ok(old) if old == text.as_bytes() => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    remove_stale_temps(&path);
    let (dir, tmp) = temp_beside(&path, "tmp")?;
    let result = (|| -> Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| true)
}

impl Heap {
    /// Publish a sealed copy of the latest commit into the directory `dir` (DESIGN §9): the
    /// copy as `<digest>.pheap`, then `manifest.json` naming it, replaced atomically, so a
    /// reader sees the old publication or the new one. Content already published there is not
    /// written again. The manifest's `pickles` survey is left `null` (the Python package's
    /// `pheap.publish` fills it in).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
    /// let out = dir.path().join("features");
    /// let first = heap.publish_to(&out)?;
    /// assert!(first.file_written && first.manifest_written);
    /// let again = heap.publish_to(&out)?; // nothing changed: nothing written
    /// assert!(!again.file_written && !again.manifest_written);
    /// let sealed = pheap::Heap::open(out.join(&first.file))?;
    /// assert_eq!(sealed.digest(), Some(first.digest));
    /// # Ok::<(), pheap::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Heap::copy_to`]; [`crate::Error::Io`] when the directory cannot be written (what was
    /// published there before stays whole).
    pub fn publish_to(&self, dir: impl AsRef<Path>) -> Result<PublishStats> {
        publish_with(self, dir.as_ref(), |_| Ok(None))
    }
}
