//! `pheap.Heap`: an open heap.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pheap::WriteTxn;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::codec::Trust;
use crate::errors::{self, OrPy};
use crate::handles::*;
use crate::map::*;
use crate::snapshot::*;
use crate::transaction::*;

/// An open heap: a persistent mapping of Python keys to Python values.
#[pyclass(frozen, extends = Map, module = "pheap", name = "Heap")]
pub(crate) struct Heap {
    pub(crate) core: Arc<HeapCore>,
}

impl Heap {
    pub(crate) fn from_core(py: Python<'_>, core: Arc<HeapCore>) -> PyResult<Py<Heap>> {
        let base = Map { target: Target::Heap(core.clone()), path: Vec::new() };
        Py::new(py, PyClassInitializer::from(base).add_subclass(Heap { core }))
    }

    pub(crate) fn heap(&self) -> PyResult<pheap::Heap> {
        self.core.heap()
    }
}

/// Begin a write transaction, waiting for the writer lock with the GIL released, in slices of
/// at most 50 ms so that signals (Ctrl-C) are seen between them; for at most `timeout` seconds
/// when given (then BusyError).
pub(crate) fn begin_write(
    py: Python<'_>,
    heap: &pheap::Heap,
    timeout: Option<f64>,
) -> PyResult<WriteTxn> {
    const SLICE: Duration = Duration::from_millis(50);
    let deadline = match timeout {
        Some(secs) => {
            let d = Duration::try_from_secs_f64(secs).map_err(|_| {
                PyValueError::new_err("timeout must be a finite number of seconds >= 0")
            })?;
            Some(Instant::now() + d)
        }
        None => None,
    };
    loop {
        let slice =
            deadline.map_or(SLICE, |d| d.saturating_duration_since(Instant::now()).min(SLICE));
        match py.detach(|| heap.begin_write_timeout(slice)) {
            Err(pheap::Error::WriteInProgress) => {}
            r => return r.py_err(),
        }
        py.check_signals()?;
        if let (Some(d), Some(secs)) = (deadline, timeout)
            && Instant::now() >= d
        {
            let who = heap.last_writer_pid().map_or(String::new(), |p| format!(" (process {p})"));
            return Err(errors::new(
                "BusyError",
                format!("another writer{who} held the heap for the whole {secs} s timeout"),
            ));
        }
    }
}

/// The engine's figures as a dict, field for field (`Stats` is `Serialize`: the CLI's
/// `stat --json` has the same fields).
pub(crate) fn stats_dict<'py>(py: Python<'py>, s: &pheap::Stats) -> PyResult<Bound<'py, PyAny>> {
    let v = serde_json::to_value(s).map_err(|e| PyValueError::new_err(e.to_string()))?;
    json_to_py(py, &v)
}

/// A JSON value as the Python object `json.loads` would give.
fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => py.None().into_bound(py),
        J::Bool(b) => pyo3::types::PyBool::new(py, *b).to_owned().into_any(),
        J::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u.into_pyobject(py)?.into_any(),
            (_, Some(i)) => i.into_pyobject(py)?.into_any(),
            _ => n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        J::String(t) => t.into_pyobject(py)?.into_any(),
        J::Array(a) => {
            PyList::new(py, a.iter().map(|x| json_to_py(py, x)).collect::<PyResult<Vec<_>>>()?)?
                .into_any()
        }
        J::Object(o) => {
            let d = PyDict::new(py);
            for (k, x) in o {
                d.set_item(k, json_to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}

#[pymethods]
impl Heap {
    #[new]
    #[pyo3(signature = (path, *, create=true, read_only=false, durability="immediate", trusted=Trust::All, codec="native"))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        create: bool,
        read_only: bool,
        durability: &str,
        trusted: Trust,
        codec: &str,
    ) -> PyResult<PyClassInitializer<Self>> {
        let raw = match codec {
            "native" => false,
            "raw" => true,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "codec must be \"native\" or \"raw\", not {codec:?}"
                )));
            }
        };
        let opts = Options {
            path,
            create: create && !read_only,
            read_only,
            durability: parse_durability(durability)?,
            trusted,
            raw,
        };
        let heap = py.detach(|| opts.open()).map_err(|e| errors::opening(e, &opts.path))?;
        let core = Arc::new(HeapCore {
            opts,
            heap: Mutex::new(Some(heap)),
            fork_gen: AtomicU64::new(forks()),
        });
        let base = Map { target: Target::Heap(core.clone()), path: Vec::new() };
        Ok(PyClassInitializer::from(base).add_subclass(Heap { core }))
    }

    /// Read-modify-write of one key in one transaction: `func` is called once with the value
    /// of `key` (`default` when it is missing), and what it returns is stored and returned,
    /// all under the writer lock: from many processes at once no update is lost (unlike
    /// `db[k] = func(db[k])`, a read and then a separate commit). An exception from `func`
    /// aborts: nothing is written. Never retried.
    #[pyo3(signature = (key, func, default=None))]
    fn update_key(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        func: &Bound<'_, PyAny>,
        default: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let tx = slf.call_method0("transaction")?;
        tx.call_method0("__enter__")?;
        let default = default.map_or_else(|| py.None().into_bound(py), |d| d.clone());
        let updated = (|| {
            let old = tx.call_method1("get", (key, default))?;
            let new = func.call1((old,))?;
            tx.set_item(key, &new)?;
            Ok::<_, PyErr>(new)
        })();
        match updated {
            Ok(new) => {
                tx.call_method1("__exit__", (py.None(), py.None(), py.None()))?;
                Ok(new.unbind())
            }
            Err(e) => {
                // Aborts (the exception's own type and value, as a `with` block passes them).
                let _ = tx.call_method1("__exit__", (e.get_type(py), e.value(py), py.None()));
                Err(e)
            }
        }
    }

    /// Begin a write transaction (waiting, with the GIL released, while another thread or
    /// process writes; `wait=False` raises BusyError instead, `timeout=SECONDS` after that long,
    /// and a timed wait lets Ctrl-C through). Commit on leaving a `with` block, abort on an
    /// exception.
    #[pyo3(signature = (*, durability=None, wait=true, timeout=None))]
    fn transaction(
        &self,
        py: Python<'_>,
        durability: Option<&str>,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<Py<Transaction>> {
        let d = durability.map(parse_durability).transpose()?;
        let heap = self.heap()?;
        let mut tx = match (wait, timeout) {
            (false, _) => heap.try_begin_write().py_err()?,
            (true, timeout) => begin_write(py, &heap, timeout)?,
        };
        if let Some(d) = d {
            tx.set_durability(d);
        }
        let core = Arc::new(TxnCore {
            heap: self.core.clone(),
            tx: Mutex::new(Some(tx)),
            fork_gen: forks(),
            thread: std::thread::current().id(),
        });
        let base = Map { target: Target::Txn(core.clone()), path: Vec::new() };
        Py::new(py, PyClassInitializer::from(base).add_subclass(Transaction { core }))
    }

    /// A pinned, consistent view of the latest commit, for a batch of reads; never blocks nor is
    /// blocked. Close it (or leave its `with` block) to let its space be reused.
    fn snapshot(&self, py: Python<'_>) -> PyResult<Py<Snapshot>> {
        let rx = self.heap()?.begin_read_shared().py_err()?;
        let core = Arc::new(SnapCore {
            heap: self.core.clone(),
            rx: Mutex::new(Some(rx)),
            fork_gen: forks(),
        });
        let base = Map { target: Target::Snap(core.clone()), path: Vec::new() };
        Py::new(py, PyClassInitializer::from(base).add_subclass(Snapshot { core }))
    }

    /// Make every commit so far durable (one sync), with the GIL released.
    fn checkpoint(&self, py: Python<'_>) -> PyResult<()> {
        let heap = self.heap()?;
        py.detach(|| heap.checkpoint()).py_err()
    }

    /// Space and content figures of the latest commit.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.heap()?.stats().py_err()?;
        stats_dict(py, &s)
    }

    /// The live read transactions of every process: slot, txn_id, pid, since_ns, holds_bytes.
    fn readers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for r in self.heap()?.readers().py_err()? {
            list.append(py_dict!(py,
                "slot" => r.slot,
                "txn_id" => r.txn_id,
                "pid" => r.pid,
                "since_ns" => r.since_ns,
                "holds_bytes" => r.holds_bytes,
            ))?;
        }
        Ok(list)
    }

    /// Move records down and shrink the file (GIL released); returns sizes before and after.
    fn compact<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let heap = self.heap()?;
        let s = py.detach(|| heap.compact()).py_err()?;
        Ok(py_dict!(py,
            "file_size_before" => s.file_size_before,
            "file_size_after" => s.file_size_after,
            "moved_bytes" => s.moved_bytes,
            "steps" => s.steps,
        ))
    }

    /// Write a copy of the latest commit to `path` (GIL released): by pages (its records copied
    /// where they lie, free space zero) when at most a quarter of the heap is free, else rebuilt
    /// compactly; `by_pages` in the returned dict says which. The destination must not exist
    /// unless `overwrite=True`.
    #[pyo3(signature = (path, *, overwrite=false))]
    fn copy_to<'py>(
        &self,
        py: Python<'py>,
        path: PathBuf,
        overwrite: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let heap = self.heap()?;
        let s = py
            .detach(
                || if overwrite { heap.copy_to_overwriting(&path) } else { heap.copy_to(&path) },
            )
            .py_err()?;
        Ok(py_dict!(py,
            "source_txn_id" => s.source_txn_id,
            "entries" => s.entries,
            "file_size" => s.file_size,
            "by_pages" => s.by_pages,
        ))
    }

    /// Write a sealed copy of the latest commit to `path` (GIL released): read-only for good,
    /// opened without a lock file or any lock, described by its digest (32 hexadecimal digits,
    /// in the returned dict), which `check()` verifies. The destination must not exist. With
    /// `by_pages=True`, copied by pages where `copy_to` would be (several times faster; its
    /// digest then depends on the commit and the layout, not on the content alone).
    #[pyo3(signature = (path, *, by_pages=false))]
    fn seal_to<'py>(
        &self,
        py: Python<'py>,
        path: PathBuf,
        by_pages: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let heap = self.heap()?;
        let s = py
            .detach(|| if by_pages { heap.seal_by_pages_to(&path) } else { heap.seal_to(&path) })
            .py_err()?;
        Ok(py_dict!(py,
            "source_txn_id" => s.source_txn_id,
            "entries" => s.entries,
            "file_size" => s.file_size,
            "digest" => pheap::digest_hex(&s.digest.unwrap_or_default()),
            "by_pages" => s.by_pages,
        ))
    }

    /// Copy every top-level entry of `src` into this heap as stored (kind and parts: nothing
    /// decoded, no pickle loaded), in one transaction; an entry already here is replaced. What
    /// a shard set's commit does with the pieces of one shard. Returns the entries copied.
    fn _merge_from(&self, py: Python<'_>, src: PyRef<'_, Heap>) -> PyResult<usize> {
        use pheap::prelude::*;
        let dst = self.heap()?;
        let src = src.heap()?;
        py.detach(|| -> pheap::Result<usize> {
            let rx = src.begin_read()?;
            let mut tx = dst.begin_write()?;
            let mut n = 0;
            for item in (&rx).iter() {
                let (k, v) = item?;
                if v.kind() == pheap::Kind::Map {
                    return Err(pheap::Error::WrongKind {
                        key: k.to_vec(),
                        expected: pheap::Kind::Bytes,
                        found: pheap::Kind::Map,
                    });
                }
                let parts = v.parts().collect::<pheap::Result<Vec<_>>>()?;
                tx.insert_parts(k, v.kind(), v.inline(), &parts)?;
                n += 1;
            }
            tx.commit()?;
            Ok(n)
        })
        .py_err()
    }

    /// Publish a sealed copy into the directory `path` (`pheap.publish` for a local URL; GIL
    /// released but while `survey(sealed_path)` runs, which returns the manifest's `pickles`
    /// object as JSON text, or None).
    fn _publish_to<'py>(
        &self,
        py: Python<'py>,
        path: PathBuf,
        survey: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let heap = self.heap()?;
        let survey = survey.unbind();
        let mut failed: Option<PyErr> = None;
        let r = py.detach(|| {
            pheap::publish::publish_with(&heap, &path, |sealed| {
                Python::attach(|py| {
                    survey.call1(py, (sealed.to_path_buf(),))?.extract::<Option<String>>(py)
                })
                .map_err(|e| {
                    failed = Some(e);
                    pheap::Error::Io(std::io::Error::other("the pickle survey failed"))
                })
            })
        });
        if let Some(e) = failed {
            return Err(e);
        }
        let p = r.py_err()?;
        Ok(py_dict!(py,
            "digest" => pheap::digest_hex(&p.digest),
            "file" => p.file,
            "size" => p.size,
            "entries" => p.entries,
            "file_written" => p.file_written,
            "manifest_written" => p.manifest_written,
        ))
    }

    /// A sealed heap's digest (32 hexadecimal digits), or None for a heap that is not sealed.
    #[getter]
    fn digest(&self) -> PyResult<Option<String>> {
        Ok(self.heap()?.digest().map(|d| pheap::digest_hex(&d)))
    }

    /// Verify a sealed heap's digest against its bytes (reads the whole file, GIL released);
    /// returns the digest. CorruptError when they differ; RefusedError for a heap not sealed.
    fn verify_digest(&self, py: Python<'_>) -> PyResult<String> {
        let heap = self.heap()?;
        let d = py.detach(|| heap.verify_digest()).py_err()?;
        Ok(pheap::digest_hex(&d))
    }

    /// Walk and verify everything reachable from the latest commit (GIL released).
    fn check<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let heap = self.heap()?;
        let r = py.detach(|| heap.check()).py_err()?;
        Ok(py_dict!(py,
            "txn_id" => r.txn_id,
            "entries" => r.entries,
            "maps" => r.maps,
            "parts" => r.parts,
            "live_bytes" => r.live_bytes,
            "free_bytes" => r.free_bytes,
        ))
    }

    /// End this handle's use. Snapshots, transactions and views made from it keep working
    /// until they end: nothing is unmapped under them.
    fn close(&self) {
        let old = self.core.heap.lock().take();
        drop(old);
    }

    #[getter]
    fn closed(&self) -> bool {
        self.core.heap.lock().is_none()
    }

    #[getter]
    fn filename(&self) -> String {
        self.core.opts.path.display().to_string()
    }

    #[getter]
    fn durability(&self) -> &'static str {
        self.core.opts.durability_name()
    }

    #[getter]
    fn trusted<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.core.opts.trusted.to_object(py)
    }

    #[getter]
    fn read_only(&self) -> bool {
        self.core.opts.read_only || self.heap().is_ok_and(|h| h.sealed())
    }

    #[getter]
    fn codec(&self) -> &'static str {
        if self.core.opts.raw { "raw" } else { "native" }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, PyTuple>) -> bool {
        self.close();
        false
    }

    /// Pickled as its path and options: a process that unpickles it opens the heap itself.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let o = &self.core.opts;
        let reopen = py.import("pheap")?.getattr("_reopen")?;
        let args = (
            o.path.display().to_string(),
            o.read_only,
            o.durability_name(),
            o.trusted.to_object(py)?,
            if o.raw { "raw" } else { "native" },
        )
            .into_pyobject(py)?;
        PyTuple::new(py, [reopen, args.into_any()])
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() { "closed " } else { "" };
        format!("<pheap.Heap {state}{:?}>", self.filename())
    }
}
