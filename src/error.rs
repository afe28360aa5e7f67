//! The one public error type.

use std::fmt;
use std::io;

use crate::kind::{Kind, show_key};
use std::path::PathBuf;

/// Everything that can go wrong in pheap. Each message says what happened and what to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No heap file at the path, and the heap was opened with `create(false)` (or read-only).
    NotFound {
        /// The path opened.
        path: PathBuf,
    },
    /// The destination of [`crate::Heap::copy_to`] exists (`copy_to_overwriting` replaces it).
    Exists {
        /// The destination.
        path: PathBuf,
    },
    /// The file is not a pheap heap (wrong magic, or empty).
    NotAPheap {
        /// The path opened.
        path: PathBuf,
        /// What gave it away.
        reason: &'static str,
    },
    /// The file was written by a format version this build cannot read.
    UnsupportedVersion {
        /// The file's version.
        found: u32,
        /// The version this build reads and writes ([`crate::FORMAT_VERSION`]).
        supported: u32,
    },
    /// The file ends before a structure it must contain.
    Truncated {
        /// The file's length.
        len: u64,
        /// The length the structure needs.
        needed: u64,
    },
    /// A structure in the file is damaged; `offset` is where the damage was found.
    Corrupt {
        /// Byte offset in the heap file.
        offset: u64,
        /// The structure and the check that failed.
        what: &'static str,
    },
    /// A key longer than [`crate::MAX_KEY_LEN`].
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// [`crate::MAX_KEY_LEN`].
        max: usize,
    },
    /// A value longer than [`crate::MAX_VALUE_LEN`].
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// [`crate::MAX_VALUE_LEN`].
        max: usize,
    },
    /// The key holds a value of another kind than the operation needs: `get` on a map,
    /// `map_mut` or `insert` over a map, `map` on bytes. Nothing was changed.
    WrongKind {
        /// The key.
        key: Vec<u8>,
        /// The kind the operation needs.
        expected: Kind,
        /// The kind the key holds.
        found: Kind,
    },
    /// A map nested deeper than [`crate::MAX_NESTING`].
    NestingTooDeep {
        /// [`crate::MAX_NESTING`].
        max: usize,
    },
    /// `get` on a value of several parts: read it with `get_value`.
    MultiPart {
        /// The key.
        key: Vec<u8>,
        /// Its out-of-line parts.
        parts: usize,
    },
    /// A typed read whose type does not fit the value: wrong size, or a value not aligned for
    /// the type.
    TypeMismatch {
        /// The key.
        key: Vec<u8>,
        /// The type asked for.
        type_name: &'static str,
        /// The value's length in bytes.
        len: usize,
        /// What does not fit.
        reason: &'static str,
    },
    /// The heap's lock file (`<heap>-lock`) cannot be used: no access, or another build's layout.
    LockFile {
        /// The lock file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A setup that would lose or corrupt data, refused: a heap with more than one hard link, a
    /// lock file that other handles of the heap do not share (deleted, replaced, or reached
    /// through another name), a copy onto a heap in use or onto its own source.
    Refused {
        /// The file refused.
        path: PathBuf,
        /// What is wrong with the setup and what to do.
        reason: String,
    },
    /// A write transaction cannot begin while a read transaction still holds a commit that a
    /// failed sync discarded (DESIGN §4.6, I13): its records lie in space the heap now counts as
    /// free. Retry once that reader ends.
    DiscardedCommitPinned {
        /// The discarded commit the reader holds.
        txn_id: u64,
    },
    /// A copy's entry count differs from its source's: the copy was not published.
    CopyIncomplete {
        /// Entries of the source snapshot.
        expected: u64,
        /// Entries the copy holds.
        copied: u64,
    },
    /// Every reader slot of the registry is taken by a live read transaction.
    ReadersFull {
        /// Reader slots of the registry ([`crate::MAX_READERS`]).
        max: u32,
    },
    /// The handle was opened before this process was forked from its parent.
    Forked,
    /// `try_begin_write` found a write transaction in progress.
    WriteInProgress,
    /// `begin_write` (or `checkpoint`, `compact`) on a thread that holds a write transaction of
    /// the same heap file, begun on it and not yet ended: waiting would wait for itself.
    WriteOnThisThread,
    /// A write transaction was attempted on a heap opened read-only.
    ReadOnly,
    /// A write was attempted on a sealed heap (DESIGN §2.1a): read-only for good.
    Sealed {
        /// The heap.
        path: PathBuf,
    },
    /// An earlier operation of this write transaction failed; it can only be dropped.
    TxnFailed,
    /// An earlier write or sync failed; this handle refuses all work until the heap is reopened.
    Poisoned,
    /// The operating system reported an I/O error.
    Io(io::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound { path } => write!(
                f,
                "{}: no such heap file (open with create(true) to make one)",
                path.display()
            ),
            Error::Exists { path } => write!(
                f,
                "{} exists; copy_to_overwriting replaces it (pheap copy --force)",
                path.display()
            ),
            Error::DiscardedCommitPinned { txn_id } => write!(
                f,
                "a read transaction still holds commit {txn_id}, which a failed sync discarded; retry once it ends"
            ),
            Error::CopyIncomplete { expected, copied } => write!(
                f,
                "the copy holds {copied} entries where its source holds {expected}; it was not published"
            ),
            Error::NotAPheap { path, reason } => write!(
                f,
                "{} is not a pheap heap file ({reason}); check the path, or move the file aside to create a new heap",
                path.display()
            ),
            Error::UnsupportedVersion { found, supported } => write!(
                f,
                "heap file has format version {found}, this build reads version {supported}; open it with a matching pheap release"
            ),
            Error::Truncated { len, needed } => write!(
                f,
                "heap file is truncated: {len} bytes, at least {needed} needed; restore it from a backup"
            ),
            Error::Corrupt { offset, what } => write!(
                f,
                "heap file is corrupt at offset {offset:#x}: {what}; restore it from a backup"
            ),
            Error::KeyTooLarge { len, max } => {
                write!(f, "key of {len} bytes exceeds the limit of {max} bytes")
            }
            Error::ValueTooLarge { len, max } => {
                write!(f, "value of {len} bytes exceeds the limit of {max} bytes")
            }
            Error::WrongKind { key, expected, found } => {
                write!(f, "key {} holds {found}, not {expected}", show_key(key))
            }
            Error::NestingTooDeep { max } => {
                write!(f, "maps nest at most {max} deep; flatten the structure")
            }
            Error::MultiPart { key, parts } => write!(
                f,
                "key {} holds a value of {parts} out-of-line parts; read it with get_value",
                show_key(key)
            ),
            Error::TypeMismatch { key, type_name, len, reason } => write!(
                f,
                "the value of key {} ({len} bytes) cannot be read as {type_name}: {reason}",
                show_key(key)
            ),
            Error::LockFile { path, reason } => {
                write!(f, "cannot use the heap's lock file {}: {reason}", path.display())
            }
            Error::Refused { path, reason } => write!(f, "{}: refused: {reason}", path.display()),
            Error::ReadersFull { max } => write!(
                f,
                "all {max} reader slots are in use by live read transactions; end some (drop ReadTxn values) and retry"
            ),
            Error::Forked => write!(
                f,
                "this heap handle was opened before fork(); a child process must open the heap again"
            ),
            Error::WriteInProgress => {
                write!(
                    f,
                    "another write transaction is in progress; retry, or use begin_write to wait"
                )
            }
            Error::WriteOnThisThread => write!(
                f,
                "this thread already holds a write transaction of this heap; commit or drop it first"
            ),
            Error::ReadOnly => {
                write!(f, "the heap was opened read-only; reopen it writable to modify it")
            }
            Error::Sealed { path } => write!(
                f,
                "{} is sealed (a published copy, fixed by its digest) and cannot be changed; copy_to makes a writable copy",
                path.display()
            ),
            Error::TxnFailed => write!(
                f,
                "an earlier operation of this write transaction failed; drop it and begin a new one"
            ),
            Error::Poisoned => write!(
                f,
                "an earlier write or sync on this heap failed, so it refuses further work; reopen the heap (it recovers to the last commit)"
            ),
            Error::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

pub(crate) fn corrupt(offset: u64, what: &'static str) -> Error {
    Error::Corrupt { offset, what }
}
