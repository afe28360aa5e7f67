//! Rust errors as Python exceptions. The classes live in `pheap/errors.py` (multiple bases:
//! `KeyTooLarge` is a `pheap.Error` and a `ValueError`); each engine error maps to one.

use pheap::{Error, Kind};
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    let m = MODULE.get_or_try_init(py, || Ok::<_, PyErr>(py.import("pheap.errors")?.unbind()))?;
    Ok(m.bind(py).getattr(name)?.cast_into::<PyType>()?)
}

/// An exception of the class `name` of `pheap.errors` with `msg`.
pub fn new(name: &str, msg: String) -> PyErr {
    Python::attach(|py| match class(py, name) {
        Ok(ty) => PyErr::from_type(ty, msg),
        Err(e) => PyRuntimeError::new_err(format!("{msg} (and pheap.errors.{name}: {e})")),
    })
}

pub fn corrupt(msg: String) -> PyErr {
    new("CorruptError", msg)
}

pub fn untrusted(msg: String) -> PyErr {
    new("UntrustedError", msg)
}

pub fn closed(what: &str) -> PyErr {
    new("ClosedError", format!("{what} is closed"))
}

pub fn forked(what: &str) -> PyErr {
    new(
        "ForkedError",
        format!(
            "{what} was made before this process was forked from its parent: make a new one in \
             the child (a Heap handle reopens itself)"
        ),
    )
}

/// A stored kind in a Python user's words.
fn kind_text(kind: Kind) -> String {
    match kind {
        Kind::Tagged(crate::codec::TAG_PY1) => "a Python value".into(),
        Kind::Tagged(t) => format!("a value tagged {t} (not written by the Python codec)"),
        Kind::Bytes => "bytes (written with codec=\"raw\")".into(),
        Kind::Map => "a map".into(),
    }
}

/// A stored key as Python shows it: the key it decodes to, else its bytes.
fn key_text(key: &[u8]) -> String {
    Python::attach(|py| {
        let shown = crate::codec::decode_key(py, key).and_then(|k| k.repr());
        match shown {
            Ok(r) => r.to_string(),
            Err(_) => pyo3::types::PyBytes::new(py, key)
                .repr()
                .map_or_else(|_| format!("{key:?}"), |r| r.to_string()),
        }
    })
}

/// The message of an engine error in a Python user's words where the engine's names the Rust
/// API (`copy_to_overwriting`, `drop ReadTxn values`, `Kind`s), else the engine's.
fn message(e: &Error) -> String {
    match e {
        Error::Exists { path } => {
            format!("{} exists; copy_to(path, overwrite=True) replaces it", path.display())
        }
        Error::WrongKind { key, expected, found } => format!(
            "the key {} holds {}, not {}",
            key_text(key),
            kind_text(*found),
            kind_text(*expected)
        ),
        Error::MultiPart { key, parts } => format!(
            "the key {} holds a value of {parts} parts, which codec=\"raw\" cannot read as bytes",
            key_text(key)
        ),
        Error::ReadersFull { max } => format!(
            "all {max} reader slots are in use by open snapshots and iterations of every \
             process; close some (Snapshot.close(), or leave their with blocks) and retry"
        ),
        Error::WriteInProgress => "another thread or process is writing; transaction() waits \
                                   (wait=True, the default), timeout=SECONDS bounds the wait"
            .into(),
        Error::WriteOnThisThread => "this thread already has a transaction open on this heap; \
                                     commit or abort it first"
            .into(),
        Error::Forked => "this handle was made before os.fork(): make a new one in the child \
                          (a Heap handle reopens itself)"
            .into(),
        e => e.to_string(),
    }
}

/// The Python exception of an engine error.
pub fn to_py(e: Error) -> PyErr {
    let msg = message(&e);
    let name = match &e {
        Error::NotFound { .. } => {
            return PyErr::new::<PyOSError, _>((ENOENT, msg));
        }
        Error::Io(io) => {
            return match io.raw_os_error() {
                Some(errno) => PyErr::new::<PyOSError, _>((errno, msg)),
                None => PyErr::new::<PyOSError, _>(msg),
            };
        }
        Error::Exists { .. } => return PyErr::new::<PyOSError, _>((EEXIST, msg)),
        Error::NotAPheap { .. } => "NotAHeapError",
        Error::UnsupportedVersion { .. } => "VersionError",
        Error::Truncated { .. } => "TruncatedError",
        Error::Corrupt { .. } => "CorruptError",
        Error::KeyTooLarge { .. } => "KeyTooLarge",
        Error::ValueTooLarge { .. } => "ValueTooLarge",
        Error::WrongKind { .. } => "WrongKindError",
        Error::NestingTooDeep { .. } => "NestingTooDeep",
        Error::MultiPart { .. } | Error::TypeMismatch { .. } => "WrongKindError",
        Error::LockFile { .. } => "LockFileError",
        Error::Refused { .. } => "RefusedError",
        Error::DiscardedCommitPinned { .. } | Error::WriteInProgress => "BusyError",
        Error::CopyIncomplete { .. } => "CopyError",
        Error::ReadersFull { .. } => "ReadersFullError",
        Error::Forked => "ForkedError",
        Error::WriteOnThisThread | Error::TxnFailed => "TransactionError",
        Error::ReadOnly | Error::Sealed { .. } => "ReadOnlyError",
        Error::Poisoned => "PoisonedError",
        _ => "Error",
    };
    new(name, msg)
}

/// The Python exception of an error opening the heap at `path`: the operating system's errors
/// are `OSError`s (`FileNotFoundError`, `IsADirectoryError`, ...) whose `filename` is the path,
/// as Python's own `open` raises them.
pub fn opening(e: Error, path: &std::path::Path) -> PyErr {
    let filename = path.to_string_lossy().into_owned();
    match &e {
        Error::NotFound { .. } => PyErr::new::<PyOSError, _>((
            ENOENT,
            "No such heap file (pheap.open(..., create=True) makes one)".to_owned(),
            filename,
        )),
        Error::Io(io) => match io.raw_os_error() {
            Some(errno) => {
                // "Is a directory (os error 21)": Python shows the errno itself.
                let text = io.to_string();
                let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
                PyErr::new::<PyOSError, _>((errno, text, filename))
            }
            None => to_py(e),
        },
        _ => to_py(e),
    }
}

/// errno values (the same on Linux and the BSDs).
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;

/// `?` on engine results in binding code.
pub trait OrPy<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> OrPy<T> for Result<T, Error> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
