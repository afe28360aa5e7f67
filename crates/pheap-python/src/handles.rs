//! Handles and their lifetimes: the options a heap was opened with, the cores that `Heap`,
//! `Snapshot` and `Transaction` share with their maps, and fork tracking.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::ThreadId;

use parking_lot::Mutex;
use pheap::{Durability, SharedRead, WriteTxn};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::{self, OrPy};

/// Forks this process descends from (counted by `os.register_at_fork`): a handle made under
/// another count was inherited through `fork`.
pub(crate) static FORKS: AtomicU64 = AtomicU64::new(0);

pub(crate) fn forks() -> u64 {
    FORKS.load(Ordering::SeqCst)
}

/// Called in a forked child (registered by the package with `os.register_at_fork`).
#[pyfunction]
pub(crate) fn _after_fork_in_child() {
    FORKS.fetch_add(1, Ordering::SeqCst);
}

#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) path: PathBuf,
    pub(crate) create: bool,
    pub(crate) read_only: bool,
    pub(crate) durability: Durability,
    pub(crate) trusted: crate::codec::Trust,
    pub(crate) raw: bool,
}

impl Options {
    pub(crate) fn open(&self) -> pheap::Result<pheap::Heap> {
        pheap::Heap::options()
            .create(self.create)
            .read_only(self.read_only)
            .durability(self.durability)
            .open(&self.path)
    }

    pub(crate) fn durability_name(&self) -> &'static str {
        durability_name(self.durability)
    }
}

pub(crate) fn durability_name(d: Durability) -> &'static str {
    match d {
        Durability::None => "none",
        _ => "immediate",
    }
}

pub(crate) fn parse_durability(s: &str) -> PyResult<Durability> {
    match s {
        "immediate" => Ok(Durability::Immediate),
        "none" => Ok(Durability::None),
        _ => Err(PyValueError::new_err(format!(
            "durability must be \"immediate\" or \"none\", not {s:?}"
        ))),
    }
}

/// The engine handle of a `Heap` and the options it was opened with.
#[derive(Debug)]
pub(crate) struct HeapCore {
    pub(crate) opts: Options,
    pub(crate) heap: Mutex<Option<pheap::Heap>>,
    /// [`forks`] when `heap` was opened.
    pub(crate) fork_gen: AtomicU64,
}

impl HeapCore {
    /// The engine handle; in a forked child, a new one (the inherited one refuses all use).
    pub(crate) fn heap(&self) -> PyResult<pheap::Heap> {
        let mut g = self.heap.lock();
        let Some(h) = g.as_ref() else { return Err(errors::closed("this heap")) };
        let now = forks();
        if self.fork_gen.load(Ordering::SeqCst) == now {
            return Ok(h.clone());
        }
        // Opening is O(1): done with the GIL held, as the lock is held.
        let h = self.opts.open().py_err()?;
        *g = Some(h.clone());
        self.fork_gen.store(now, Ordering::SeqCst);
        Ok(h)
    }
}

/// A snapshot's pin.
#[derive(Debug)]
pub(crate) struct SnapCore {
    pub(crate) heap: Arc<HeapCore>,
    pub(crate) rx: Mutex<Option<SharedRead>>,
    pub(crate) fork_gen: u64,
}

impl SnapCore {
    pub(crate) fn rx(&self) -> PyResult<SharedRead> {
        if self.fork_gen != forks() {
            return Err(errors::forked("this snapshot"));
        }
        self.rx.lock().clone().ok_or_else(|| errors::closed("this snapshot"))
    }
}

/// A write transaction, used by the thread that began it.
#[derive(Debug)]
pub(crate) struct TxnCore {
    pub(crate) heap: Arc<HeapCore>,
    pub(crate) tx: Mutex<Option<WriteTxn>>,
    pub(crate) fork_gen: u64,
    pub(crate) thread: ThreadId,
}

impl TxnCore {
    pub(crate) fn check(&self) -> PyResult<()> {
        if self.fork_gen != forks() {
            return Err(errors::forked("this transaction"));
        }
        if std::thread::current().id() != self.thread {
            return Err(errors::new(
                "TransactionError",
                "a transaction is used only by the thread that began it".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut WriteTxn) -> PyResult<R>) -> PyResult<R> {
        self.check()?;
        let mut g = self.tx.try_lock().ok_or_else(|| {
            errors::new("TransactionError", "the transaction is in use by another call".into())
        })?;
        let tx = g.as_mut().ok_or_else(ended)?;
        f(tx)
    }

    pub(crate) fn take(&self) -> PyResult<WriteTxn> {
        self.check()?;
        let mut g = self.tx.try_lock().ok_or_else(|| {
            errors::new("TransactionError", "the transaction is in use by another call".into())
        })?;
        g.take().ok_or_else(ended)
    }
}

pub(crate) fn ended() -> PyErr {
    errors::closed("this transaction (committed or aborted)")
}

#[derive(Clone, Debug)]
pub(crate) enum Target {
    Heap(Arc<HeapCore>),
    Snap(Arc<SnapCore>),
    Txn(Arc<TxnCore>),
}

impl Target {
    pub(crate) fn heap(&self) -> &Arc<HeapCore> {
        match self {
            Target::Heap(h) => h,
            Target::Snap(s) => &s.heap,
            Target::Txn(t) => &t.heap,
        }
    }
}
