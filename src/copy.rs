//! Consistent, compacted copies of a live heap (`Heap::copy_to`).
//!
//! The copy is built from one pinned snapshot into a temporary heap beside the destination, by
//! inserting every entry in hash order (each insert extends the rightmost path of the new trie,
//! so the new file is written front to back), made durable, then published atomically: a hard
//! link (which fails if the destination exists) or a rename (overwriting), and a sync of the
//! directory. A crash at any point leaves either nothing or the complete copy at the
//! destination; the temporary files it may leave are named `.NAME.PID-RANDOM.copy[-lock]`.

use std::path::Path;

use crate::error::{Error, Result};
use crate::heap::{Heap, temp_beside};
use crate::txn::Durability;

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
}

/// Commit the copy every this many entries, bounding the work of one transaction.
const BATCH: u64 = 1 << 20;

pub(crate) fn copy_to(src: &Heap, dest: &Path, overwrite: bool) -> Result<CopyStats> {
    if !overwrite && dest.symlink_metadata().is_ok() {
        return Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists; copy_to_overwriting replaces it", dest.display()),
        )));
    }
    let rx = src.begin_read()?;
    let (dir, tmp) = temp_beside(dest, "copy")?;
    let tmp_lock = {
        let mut name = tmp.file_name().expect("a file name").to_owned();
        name.push("-lock");
        tmp.with_file_name(name)
    };
    let result = (|| -> Result<CopyStats> {
        let out = Heap::options().durability(Durability::None).open(&tmp)?;
        let mut tx = out.begin_write()?;
        let mut n = 0u64;
        for item in rx.iter() {
            let (k, v) = item?;
            tx.insert(k, v)?;
            n += 1;
            if n.is_multiple_of(BATCH) {
                tx.commit()?;
                tx = out.begin_write()?;
            }
        }
        tx.commit()?;
        out.checkpoint()?;
        if n != rx.len() || out.stats()?.entries != n {
            return Err(Error::Corrupt {
                offset: 0,
                what: "copy: entry count differs from source",
            });
        }
        drop(out); // gives back the growth slack
        let file = std::fs::File::open(&tmp)?;
        file.sync_all()?;
        let file_size = file.metadata()?.len();
        if overwrite {
            std::fs::rename(&tmp, dest)?;
        } else {
            std::fs::hard_link(&tmp, dest)?;
        }
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(CopyStats { source_txn_id: rx.txn_id(), entries: n, file_size })
    })();
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_file(&tmp_lock);
    result
}
