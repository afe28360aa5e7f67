//! Paths beside a heap file: temporary files for atomic creation and copies, and the removal of
//! those that killed processes left behind.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

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
