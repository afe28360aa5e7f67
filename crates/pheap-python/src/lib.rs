//! pheap for Python: the native module `pheap._pheap` behind the `pheap` package.
//!
//! Handles and what they own:
//! - [`Heap`] owns a [`HeapCore`]: the options and the engine handle (reopened in a forked
//!   child, dropped by `close()`).
//! - [`Snapshot`] owns a [`SharedRead`] (a pinned snapshot); [`Transaction`] a [`WriteTxn`].
//! - [`Map`] is the mapping API of all three (they extend it) and of sub-maps: a target (heap,
//!   snapshot or transaction) and a path of keys, resolved at each operation.
//! - Values decoded from a snapshot own what they read: a zero-copy part is a
//!   [`view::PartView`] holding the snapshot's pin and mapping.
//!
//! Locks: a core's mutex is held only for a clone or a short operation and never across a wait
//! with the GIL released (a thread holding the GIL could wait on it, and the waiter would need
//! the GIL back). A transaction's mutex is taken with `try_lock` (a finalizer re-entering the
//! same transaction gets an error, not a deadlock).

mod codec;
mod errors;
mod view;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::ThreadId;

use parking_lot::Mutex;
use pheap::{Durability, Kind, OwnedIter, OwnedValue, SharedRead, Value, WriteTxn};
use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple, PyType};

use codec::Buffers;
use errors::OrPy;
use view::PartView;

/// A dict of `key => value` pairs (`?` on each insertion).
macro_rules! py_dict {
    ($py:expr, $($k:literal => $v:expr),* $(,)?) => {{
        let d = PyDict::new($py);
        $(d.set_item($k, $v)?;)*
        d
    }};
}

/// Forks this process descends from (counted by `os.register_at_fork`): a handle made under
/// another count was inherited through `fork`.
static FORKS: AtomicU64 = AtomicU64::new(0);

fn forks() -> u64 {
    FORKS.load(Ordering::SeqCst)
}

/// Called in a forked child (registered by the package with `os.register_at_fork`).
#[pyfunction]
fn _after_fork_in_child() {
    FORKS.fetch_add(1, Ordering::SeqCst);
}

#[derive(Clone, Debug)]
struct Options {
    path: PathBuf,
    create: bool,
    read_only: bool,
    durability: Durability,
    trusted: bool,
    raw: bool,
}

impl Options {
    fn open(&self) -> pheap::Result<pheap::Heap> {
        pheap::Heap::options()
            .create(self.create)
            .read_only(self.read_only)
            .durability(self.durability)
            .open(&self.path)
    }

    fn durability_name(&self) -> &'static str {
        durability_name(self.durability)
    }
}

fn durability_name(d: Durability) -> &'static str {
    match d {
        Durability::None => "none",
        _ => "immediate",
    }
}

fn parse_durability(s: &str) -> PyResult<Durability> {
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
struct HeapCore {
    opts: Options,
    heap: Mutex<Option<pheap::Heap>>,
    /// [`forks`] when `heap` was opened.
    fork_gen: AtomicU64,
}

impl HeapCore {
    /// The engine handle; in a forked child, a new one (the inherited one refuses all use).
    fn heap(&self) -> PyResult<pheap::Heap> {
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
struct SnapCore {
    heap: Arc<HeapCore>,
    rx: Mutex<Option<SharedRead>>,
    fork_gen: u64,
}

impl SnapCore {
    fn rx(&self) -> PyResult<SharedRead> {
        if self.fork_gen != forks() {
            return Err(errors::forked("this snapshot"));
        }
        self.rx.lock().clone().ok_or_else(|| errors::closed("this snapshot"))
    }
}

/// A write transaction, used by the thread that began it.
#[derive(Debug)]
struct TxnCore {
    heap: Arc<HeapCore>,
    tx: Mutex<Option<WriteTxn>>,
    fork_gen: u64,
    thread: ThreadId,
}

impl TxnCore {
    fn check(&self) -> PyResult<()> {
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

    fn with<R>(&self, f: impl FnOnce(&mut WriteTxn) -> PyResult<R>) -> PyResult<R> {
        self.check()?;
        let mut g = self.tx.try_lock().ok_or_else(|| {
            errors::new("TransactionError", "the transaction is in use by another call".into())
        })?;
        let tx = g.as_mut().ok_or_else(ended)?;
        f(tx)
    }

    fn take(&self) -> PyResult<WriteTxn> {
        self.check()?;
        let mut g = self.tx.try_lock().ok_or_else(|| {
            errors::new("TransactionError", "the transaction is in use by another call".into())
        })?;
        g.take().ok_or_else(ended)
    }
}

fn ended() -> PyErr {
    errors::closed("this transaction (committed or aborted)")
}

#[derive(Clone, Debug)]
enum Target {
    Heap(Arc<HeapCore>),
    Snap(Arc<SnapCore>),
    Txn(Arc<TxnCore>),
}

impl Target {
    fn heap(&self) -> &Arc<HeapCore> {
        match self {
            Target::Heap(h) => h,
            Target::Snap(s) => &s.heap,
            Target::Txn(t) => &t.heap,
        }
    }
}

fn resolve<'a>(root: pheap::Map<'a>, path: &[Vec<u8>]) -> PyResult<Option<pheap::Map<'a>>> {
    if path.is_empty() { Ok(Some(root)) } else { root.map_path(path).py_err() }
}

/// Out-of-band buffers of a value being decoded: zero-copy views of its owned parts when it was
/// read from a snapshot, copies otherwise (a transaction may reuse its space before it commits)
/// or when asked (`copy`: writable).
struct ValueBuffers<'a> {
    parts: &'a [&'a [u8]],
    first: usize,
    copy: bool,
    owned: Option<&'a OwnedValue>,
}

impl<'py> Buffers<'py> for ValueBuffers<'_> {
    fn count(&self) -> usize {
        self.parts.len() - self.first
    }

    fn buffer(&mut self, py: Python<'py>, i: usize) -> PyResult<Bound<'py, PyAny>> {
        let idx = self.first + i;
        if self.copy {
            return Ok(codec::private_buffer(py, self.parts[idx]));
        }
        let Some(owned) = self.owned else {
            return Ok(PyBytes::new(py, self.parts[idx]).into_any());
        };
        let part = owned.parts.get(idx).ok_or_else(|| errors::corrupt("part missing".into()))?;
        Ok(Bound::new(py, PartView::new(part.clone()))?.into_any())
    }
}

/// The mapping API: a heap, a snapshot, a transaction, or a sub-map of one of them.
#[pyclass(subclass, frozen, module = "pheap", name = "Map")]
#[derive(Debug)]
struct Map {
    target: Target,
    path: Vec<Vec<u8>>,
}

impl Map {
    fn opts(&self) -> &Options {
        &self.target.heap().opts
    }

    fn key(&self, k: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
        if self.opts().raw {
            if let Ok(b) = k.cast::<PyBytes>() {
                return Ok(b.as_bytes().to_vec());
            }
            if let Ok(s) = k.cast::<pyo3::types::PyString>() {
                return Ok(s.to_str()?.as_bytes().to_vec());
            }
            return Err(PyTypeError::new_err("with codec=\"raw\" a key is bytes or str"));
        }
        codec::encode_key(k)
    }

    fn py_key<'py>(&self, py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        if self.opts().raw { Ok(PyBytes::new(py, b).into_any()) } else { codec::decode_key(py, b) }
    }

    fn child(&self, key: Vec<u8>) -> Map {
        let mut path = self.path.clone();
        path.push(key);
        Map { target: self.target.clone(), path }
    }

    /// Run `f` on the map at the path (`None` where the path does not exist) and the snapshot it
    /// was read from (`None` in a transaction).
    fn read<R>(
        &self,
        f: impl FnOnce(Option<pheap::Map<'_>>, Option<&SharedRead>) -> PyResult<R>,
    ) -> PyResult<R> {
        match &self.target {
            Target::Heap(h) => {
                let rx = h.heap()?.begin_read_shared().py_err()?;
                f(resolve(rx.root(), &self.path)?, Some(&rx))
            }
            Target::Snap(s) => {
                let rx = s.rx()?;
                f(resolve(rx.root(), &self.path)?, Some(&rx))
            }
            Target::Txn(t) => t.with(|tx| f(resolve(tx.root().py_err()?, &self.path)?, None)),
        }
    }

    /// Run `f` in a write transaction: the handle's own, or (on a heap) one of its own that
    /// commits when `f` reports a change. The GIL is released while waiting for the writer lock
    /// and while committing.
    fn write<R>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut WriteTxn) -> PyResult<(R, bool)>,
    ) -> PyResult<R> {
        match &self.target {
            Target::Snap(_) => Err(errors::new(
                "ReadOnlyError",
                "a snapshot is read-only: write in a transaction or on the heap".into(),
            )),
            Target::Txn(t) => t.with(|tx| f(tx).map(|(r, _)| r)),
            Target::Heap(h) => {
                let heap = h.heap()?;
                let mut tx = py.detach(|| heap.begin_write()).py_err()?;
                let (r, changed) = f(&mut tx)?;
                if changed {
                    py.detach(move || tx.commit()).py_err()?;
                } else {
                    tx.abort();
                }
                Ok(r)
            }
        }
    }

    fn encode(&self, value: &Bound<'_, PyAny>) -> PyResult<codec::Encoded> {
        if self.opts().raw {
            let b = pyo3::buffer::PyBuffer::<u8>::get(value).map_err(|_| {
                PyTypeError::new_err("with codec=\"raw\" a value is bytes (or a bytes-like object)")
            })?;
            return Ok(codec::Encoded { inline: b.to_vec(value.py())?, buffers: Vec::new() });
        }
        codec::encode(value, self.opts().trusted)
    }

    fn put(
        &self,
        py: Python<'_>,
        tx: &mut WriteTxn,
        key: &[u8],
        enc: &codec::Encoded,
    ) -> PyResult<bool> {
        let mut m = tx.map_mut_path(&self.path).py_err()?;
        if self.opts().raw {
            return m.insert(key, &enc.inline).py_err();
        }
        let kind = Kind::Tagged(codec::TAG_PY1);
        let bufs: Vec<&[u8]> = enc.buffers.iter().map(|b| b.bytes(py)).collect();
        if bufs.is_empty() || enc.inline.len() < pheap::OUT_OF_LINE_MIN {
            // Alone, a long item goes out of line by itself (empty inline part, one part).
            m.insert_parts(key, kind, &enc.inline, &bufs).py_err()
        } else {
            // The decoding rule: an empty inline part means part 0 holds the item.
            let mut parts = Vec::with_capacity(bufs.len() + 1);
            parts.push(&enc.inline[..]);
            parts.extend(bufs);
            m.insert_parts(key, kind, &[], &parts).py_err()
        }
    }

    /// The Python object of a stored value.
    #[allow(clippy::too_many_arguments)]
    fn decode<'py>(
        &self,
        py: Python<'py>,
        key: &[u8],
        kind: Kind,
        inline: &[u8],
        parts: &[&[u8]],
        owned: Option<&OwnedValue>,
        copy: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let whole = || -> PyResult<&[u8]> {
            match parts {
                [] => Ok(inline),
                [p] if inline.is_empty() => Ok(p),
                _ => Err(errors::new(
                    "WrongKindError",
                    format!("a value of {} parts is not one byte string", parts.len()),
                )),
            }
        };
        match kind {
            Kind::Map => Ok(Bound::new(py, self.child(key.to_vec()))?.into_any()),
            _ if self.opts().raw => Ok(PyBytes::new(py, whole()?).into_any()),
            Kind::Bytes => Ok(PyBytes::new(py, whole()?).into_any()),
            Kind::Tagged(codec::TAG_PY1) => {
                let (item, first) = if inline.is_empty() && !parts.is_empty() {
                    (parts[0], 1)
                } else {
                    (inline, 0)
                };
                let mut bufs = ValueBuffers { parts, first, copy, owned };
                codec::decode(py, item, &mut bufs, self.opts().trusted)
            }
            k => Err(errors::new(
                "UnsupportedValueError",
                format!(
                    "the key holds {k}, which the Python codec did not write: read it with \
                     codec=\"raw\" (pheap.open(path, codec=\"raw\"))"
                ),
            )),
        }
    }

    fn value_of<'py>(
        &self,
        py: Python<'py>,
        key: &[u8],
        v: &Value<'_>,
        rx: Option<&SharedRead>,
        copy: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Some(rx) = rx
            && !copy
            && v.part_count() > 0
        {
            // Parts become views that own the snapshot (each part checked once, here).
            return self.owned_value_of(py, key, &rx.own_value(v).py_err()?);
        }
        let parts = v.parts().collect::<pheap::Result<Vec<_>>>().py_err()?;
        self.decode(py, key, v.kind(), v.inline(), &parts, None, copy)
    }

    fn owned_value_of<'py>(
        &self,
        py: Python<'py>,
        key: &[u8],
        v: &OwnedValue,
    ) -> PyResult<Bound<'py, PyAny>> {
        let parts: Vec<&[u8]> = v.parts.iter().map(|p| &p[..]).collect();
        self.decode(py, key, v.kind, &v.inline, &parts, Some(v), false)
    }

    fn lookup<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        copy: bool,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let k = self.key(key)?;
        self.read(|m, rx| {
            let Some(m) = m else { return Ok(None) };
            match m.get_value(&k).py_err()? {
                Some(v) => Ok(Some(self.value_of(py, &k, &v, rx, copy)?)),
                None => Ok(None),
            }
        })
    }

    /// `(key, value)` pairs, as `items()` iterates them.
    fn iter_items<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<impl Iterator<Item = PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> + 'py>
    {
        let it = Bound::new(py, MapIter::new(self, 2)?)?;
        Ok(std::iter::from_fn(move || match it.get().__next__(py) {
            Ok(Some(pair)) => Some(pair.extract::<(Bound<'py, PyAny>, Bound<'py, PyAny>)>()),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }))
    }

    fn handle_of(&self, py: Python<'_>) -> PyResult<Py<Heap>> {
        Heap::from_core(py, self.target.heap().clone())
    }
}

fn views(py: Python<'_>, name: &str) -> PyResult<Py<PyType>> {
    static ITEMS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static VALUES: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    static KEYS: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    let cell = match name {
        "ItemsView" => &ITEMS,
        "ValuesView" => &VALUES,
        _ => &KEYS,
    };
    Ok(cell.import(py, "pheap._views", name)?.clone().unbind())
}

#[pymethods]
impl Map {
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.lookup(py, key, false)?.ok_or_else(|| PyKeyError::new_err(key.clone().unbind()))
    }

    /// The value of `key`, or `default`. `copy=True` gives private, writable copies of the
    /// value's buffers (numpy arrays) instead of read-only views of the heap.
    #[pyo3(signature = (key, default=None, *, copy=false))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
        copy: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self.lookup(py, key, copy)? {
            Some(v) => v,
            None => default.unwrap_or_else(|| py.None().into_bound(py)),
        })
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let k = match self.key(key) {
            Ok(k) => k,
            Err(e) if e.is_instance_of::<PyTypeError>(key.py()) => return Ok(false),
            Err(e) => return Err(e),
        };
        self.read(|m, _| match m {
            Some(m) => m.contains_key(&k).py_err(),
            None => Ok(false),
        })
    }

    fn __len__(&self) -> PyResult<usize> {
        self.read(|m, _| Ok(m.map_or(0, |m| m.len())))
    }

    fn __setitem__(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let k = self.key(key)?;
        let enc = self.encode(value)?;
        self.write(py, |tx| {
            self.put(py, tx, &k, &enc)?;
            Ok(((), true))
        })
    }

    fn __delitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let k = self.key(key)?;
        let removed = self.write(py, |tx| {
            if resolve(tx.root().py_err()?, &self.path)?.is_none() {
                return Ok((false, false));
            }
            let removed = tx.map_mut_path(&self.path).py_err()?.remove(&k).py_err()?;
            Ok((removed, removed))
        })?;
        if removed { Ok(()) } else { Err(PyKeyError::new_err(key.clone().unbind())) }
    }

    /// Remove `key` and return its value; `default` (or KeyError) when missing.
    #[pyo3(signature = (key, *default))]
    fn pop<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if default.len() > 1 {
            return Err(PyTypeError::new_err("pop expected at most 2 arguments"));
        }
        let k = self.key(key)?;
        let got = self.write(py, |tx| {
            let Some(m) = resolve(tx.root().py_err()?, &self.path)? else {
                return Ok((None, false));
            };
            let Some(v) = m.get_value(&k).py_err()? else { return Ok((None, false)) };
            let value = self.value_of(py, &k, &v, None, false)?;
            tx.map_mut_path(&self.path).py_err()?.remove(&k).py_err()?;
            Ok((Some(value), true))
        })?;
        match got {
            Some(v) => Ok(v),
            None if default.len() == 1 => default.get_item(0),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    /// Remove and return some `(key, value)` pair; KeyError when empty.
    fn popitem<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let got = self.write(py, |tx| {
            let Some(m) = resolve(tx.root().py_err()?, &self.path)? else {
                return Ok((None, false));
            };
            let Some(first) = m.iter().next() else { return Ok((None, false)) };
            let (k, v) = first.py_err()?;
            let k = k.to_vec();
            let value = self.value_of(py, &k, &v, None, false)?;
            tx.map_mut_path(&self.path).py_err()?.remove(&k).py_err()?;
            Ok((Some((k, value)), true))
        })?;
        match got {
            Some((k, v)) => PyTuple::new(py, [self.py_key(py, &k)?, v]),
            None => Err(PyKeyError::new_err("popitem(): the map is empty")),
        }
    }

    /// The value of `key`; when missing, store `default` and return it.
    #[pyo3(signature = (key, default=None))]
    fn setdefault<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let default = default.unwrap_or_else(|| py.None().into_bound(py));
        let k = self.key(key)?;
        let enc = self.encode(&default)?;
        self.write(py, |tx| {
            if let Some(m) = resolve(tx.root().py_err()?, &self.path)?
                && let Some(v) = m.get_value(&k).py_err()?
            {
                return Ok((self.value_of(py, &k, &v, None, false)?, false));
            }
            self.put(py, tx, &k, &enc)?;
            Ok((default.clone(), true))
        })
    }

    /// Store every pair of `other` (a mapping or an iterable of pairs) and of `kwargs`: on a heap,
    /// in one transaction (one commit).
    #[pyo3(signature = (other=None, **kwargs))]
    fn update(
        &self,
        py: Python<'_>,
        other: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        self.write(py, |tx| {
            let mut n = 0usize;
            let mut one = |k: &Bound<'_, PyAny>, v: &Bound<'_, PyAny>| -> PyResult<()> {
                let key = self.key(k)?;
                let enc = self.encode(v)?;
                self.put(py, tx, &key, &enc)?;
                n += 1;
                Ok(())
            };
            if let Some(o) = other {
                if let Ok(d) = o.cast::<PyDict>() {
                    for (k, v) in d.iter() {
                        one(&k, &v)?;
                    }
                } else if o.hasattr("keys")? {
                    for k in o.call_method0("keys")?.try_iter()? {
                        let k = k?;
                        let v = o.get_item(&k)?;
                        one(&k, &v)?;
                    }
                } else {
                    for pair in o.try_iter()? {
                        let pair = pair?;
                        let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract()?;
                        one(&k, &v)?;
                    }
                }
            }
            if let Some(kw) = kwargs {
                for (k, v) in kw.iter() {
                    one(&k, &v)?;
                }
            }
            Ok(((), n > 0))
        })
    }

    /// Remove every entry (on a heap, in one commit).
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        self.write(py, |tx| {
            if resolve(tx.root().py_err()?, &self.path)?.is_none() {
                return Ok(((), false));
            }
            tx.map_mut_path(&self.path).py_err()?.clear().py_err()?;
            Ok(((), true))
        })
    }

    /// The sub-map under `key`, a handle with this same API (nothing is read or created until
    /// it is used; the first write creates it).
    fn map(&self, key: &Bound<'_, PyAny>) -> PyResult<Map> {
        if self.path.len() >= pheap::MAX_NESTING {
            return Err(errors::new(
                "NestingTooDeep",
                format!("maps nest at most {} deep", pheap::MAX_NESTING),
            ));
        }
        Ok(self.child(self.key(key)?))
    }

    /// The sub-map under an encoded key (unpickling a map handle).
    fn _map_raw(&self, key: Vec<u8>) -> Map {
        self.child(key)
    }

    /// The keys leading from the top level to this map.
    #[getter]
    fn path<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let keys = self.path.iter().map(|k| self.py_key(py, k)).collect::<PyResult<Vec<_>>>()?;
        PyTuple::new(py, keys)
    }

    fn __iter__(&self) -> PyResult<MapIter> {
        MapIter::new(self, 0)
    }

    fn keys(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Ok(views(slf.py(), "KeysView")?.bind(slf.py()).call1((slf,))?.unbind())
    }

    fn values(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Ok(views(slf.py(), "ValuesView")?.bind(slf.py()).call1((slf,))?.unbind())
    }

    fn items(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Ok(views(slf.py(), "ItemsView")?.bind(slf.py()).call1((slf,))?.unbind())
    }

    fn _iter_values(&self) -> PyResult<MapIter> {
        MapIter::new(self, 1)
    }

    fn _iter_items(&self) -> PyResult<MapIter> {
        MapIter::new(self, 2)
    }

    /// Equal to any mapping with the same keys and equal values (as `dict` compares).
    fn __eq__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        static MAPPING: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        let mapping = MAPPING.import(py, "collections.abc", "Mapping")?;
        if !other.is_instance(mapping)? {
            return Ok(py.NotImplemented());
        }
        let equal = || -> PyResult<bool> {
            if other.len()? != slf.len()? {
                return Ok(false);
            }
            for item in slf.get().iter_items(py)? {
                let (k, v) = item?;
                match other.get_item(&k) {
                    Ok(ov) if ov.eq(&v)? => {}
                    Ok(_) => return Ok(false),
                    Err(e) if e.is_instance_of::<PyKeyError>(py) => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            Ok(true)
        };
        Ok(pyo3::types::PyBool::new(py, equal()?).to_owned().into_any().unbind())
    }

    fn __ne__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let eq = Self::__eq__(slf, other)?;
        if eq.is(py.NotImplemented()) {
            return Ok(eq);
        }
        Ok(pyo3::types::PyBool::new(py, !eq.bind(py).is_truthy()?).to_owned().into_any().unbind())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let what = match &self.target {
            Target::Heap(_) => "heap",
            Target::Snap(_) => "snapshot",
            Target::Txn(_) => "transaction",
        };
        Ok(format!(
            "<pheap.Map {} of {what} {:?}>",
            self.path(py)?.repr()?,
            self.opts().path.display().to_string()
        ))
    }

    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        if !matches!(self.target, Target::Heap(_)) {
            return Err(PyTypeError::new_err(
                "a map of a snapshot or a transaction cannot be pickled (it cannot leave the \
                 process); pickle the heap, or heap.map(...)",
            ));
        }
        let submap = py.import("pheap")?.getattr("_submap")?;
        let path = PyList::new(py, self.path.iter().map(|k| PyBytes::new(py, k)))?;
        PyTuple::new(
            py,
            [
                submap,
                PyTuple::new(py, [self.handle_of(py)?.into_any().into_bound(py), path.into_any()])?
                    .into_any(),
            ],
        )
    }
}

/// Iteration over a map: from a snapshot (a heap's iteration takes one), or over the keys a
/// transaction held when the iteration began.
#[pyclass(frozen, module = "pheap", name = "MapIterator")]
struct MapIter {
    map: Map,
    /// 0 keys, 1 values, 2 items.
    mode: u8,
    src: Mutex<IterSrc>,
}

enum IterSrc {
    Owned(Box<OwnedIter>),
    Keys(std::vec::IntoIter<Vec<u8>>),
}

impl MapIter {
    fn new(map: &Map, mode: u8) -> PyResult<MapIter> {
        let src = match &map.target {
            Target::Heap(h) => {
                let rx = h.heap()?.begin_read_shared().py_err()?;
                IterSrc::Owned(Box::new(rx.iter_owned(&map.path).py_err()?))
            }
            Target::Snap(s) => IterSrc::Owned(Box::new(s.rx()?.iter_owned(&map.path).py_err()?)),
            Target::Txn(t) => t.with(|tx| {
                let keys = match resolve(tx.root().py_err()?, &map.path)? {
                    Some(m) => m
                        .iter()
                        .map(|r| r.map(|(k, _)| k.to_vec()))
                        .collect::<pheap::Result<Vec<_>>>()
                        .py_err()?,
                    None => Vec::new(),
                };
                Ok(IterSrc::Keys(keys.into_iter()))
            })?,
        };
        Ok(MapIter {
            map: Map { target: map.target.clone(), path: map.path.clone() },
            mode,
            src: Mutex::new(src),
        })
    }
}

#[pymethods]
impl MapIter {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let mut src = self.src.try_lock().ok_or_else(|| {
            errors::new("TransactionError", "the iterator is in use by another call".into())
        })?;
        let (k, v) = match &mut *src {
            IterSrc::Owned(it) => {
                if let Target::Snap(s) = &self.map.target {
                    s.rx()?; // closed or forked snapshots end their iterations
                }
                let Some(item) = it.next() else { return Ok(None) };
                let (k, v) = item.py_err()?;
                let value =
                    if self.mode == 0 { None } else { Some(self.map.owned_value_of(py, &k, &v)?) };
                (self.map.py_key(py, &k)?, value)
            }
            IterSrc::Keys(keys) => loop {
                let Some(k) = keys.next() else { return Ok(None) };
                if self.mode == 0 {
                    break (self.map.py_key(py, &k)?, None);
                }
                let v = self.map.read(|m, _| match m {
                    Some(m) => match m.get_value(&k).py_err()? {
                        Some(v) => Ok(Some(self.map.value_of(py, &k, &v, None, false)?)),
                        None => Ok(None),
                    },
                    None => Ok(None),
                })?;
                // A key removed since the iteration began is skipped.
                if let Some(v) = v {
                    break (self.map.py_key(py, &k)?, Some(v));
                }
            },
        };
        Ok(Some(match (self.mode, v) {
            (1, Some(v)) => v,
            (2, Some(v)) => PyTuple::new(py, [k, v])?.into_any(),
            _ => k,
        }))
    }
}

/// An open heap: a persistent mapping of Python keys to Python values.
#[pyclass(frozen, extends = Map, module = "pheap", name = "Heap")]
struct Heap {
    core: Arc<HeapCore>,
}

impl Heap {
    fn from_core(py: Python<'_>, core: Arc<HeapCore>) -> PyResult<Py<Heap>> {
        let base = Map { target: Target::Heap(core.clone()), path: Vec::new() };
        Py::new(py, PyClassInitializer::from(base).add_subclass(Heap { core }))
    }

    fn heap(&self) -> PyResult<pheap::Heap> {
        self.core.heap()
    }
}

/// Wait at most `secs` for the writer lock, polling with the GIL released and letting signals
/// (Ctrl-C) interrupt the wait.
fn begin_write_within(py: Python<'_>, heap: &pheap::Heap, secs: f64) -> PyResult<WriteTxn> {
    if !(secs >= 0.0 && secs.is_finite()) {
        return Err(PyValueError::new_err("timeout must be a finite number of seconds >= 0"));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    let mut pause = std::time::Duration::from_micros(200);
    loop {
        match heap.try_begin_write() {
            Err(pheap::Error::WriteInProgress) => {}
            r => return r.py_err(),
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            let who = heap.last_writer_pid().map_or(String::new(), |p| format!(" (process {p})"));
            return Err(errors::new(
                "BusyError",
                format!("another writer{who} held the heap for the whole {secs} s timeout"),
            ));
        }
        let nap = pause.min(deadline - now);
        py.detach(|| std::thread::sleep(nap));
        py.check_signals()?;
        pause = (pause * 2).min(std::time::Duration::from_millis(10));
    }
}

fn stats_dict<'py>(py: Python<'py>, s: &pheap::Stats) -> PyResult<Bound<'py, PyDict>> {
    Ok(py_dict!(py,
        "file_size" => s.file_size,
        "used_size" => s.used_size,
        "live_bytes" => s.live_bytes,
        "free_bytes" => s.free_bytes,
        "pending_bytes" => s.pending_bytes,
        "held_by_readers" => s.held_by_readers,
        "entries" => s.entries,
        "txn_id" => s.txn_id,
        "durable_txn_id" => s.durable_txn_id,
        "oldest_reader" => s.oldest_reader,
        "readers" => s.readers,
        "skipped_commits" => s.skipped_commits.len(),
        "boot_id_known" => s.boot_id_known,
        "format_version" => s.format_version,
    ))
}

#[pymethods]
impl Heap {
    #[new]
    #[pyo3(signature = (path, *, create=true, read_only=false, durability="immediate", trusted=true, codec="native"))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        create: bool,
        read_only: bool,
        durability: &str,
        trusted: bool,
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
            (true, None) => py.detach(|| heap.begin_write()).py_err()?,
            (true, Some(secs)) => begin_write_within(py, &heap, secs)?,
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
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
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

    /// Write a compact copy of the latest commit to `path` (GIL released). The destination must
    /// not exist unless `overwrite=True`.
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
        ))
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
    fn trusted(&self) -> bool {
        self.core.opts.trusted
    }

    #[getter]
    fn read_only(&self) -> bool {
        self.core.opts.read_only
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
            o.trusted,
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

/// A write transaction: the mapping API over what it has written so far.
#[pyclass(frozen, extends = Map, module = "pheap", name = "Transaction")]
struct Transaction {
    core: Arc<TxnCore>,
}

#[pymethods]
impl Transaction {
    /// Publish the writes (a sync first when durable), with the GIL released.
    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        let tx = self.core.take()?;
        py.detach(move || tx.commit()).py_err()
    }

    /// Discard the writes.
    fn abort(&self) -> PyResult<()> {
        self.core.take()?.abort();
        Ok(())
    }

    #[getter]
    fn txn_id(&self) -> PyResult<u64> {
        self.core.with(|tx| Ok(tx.txn_id()))
    }

    #[getter]
    fn closed(&self) -> bool {
        self.core.tx.try_lock().is_some_and(|g| g.is_none())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (exc_type, _exc=None, _tb=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let ended = self.core.tx.try_lock().is_some_and(|g| g.is_none());
        if ended {
            return Ok(false);
        }
        if exc_type.is_some_and(|t| !t.is_none()) {
            self.abort()?;
        } else {
            self.commit(py)?;
        }
        Ok(false)
    }

    fn __reduce__(&self) -> PyResult<()> {
        Err(PyTypeError::new_err("a transaction cannot be pickled: it belongs to its thread"))
    }
}

/// A pinned snapshot: the mapping API, read-only.
#[pyclass(frozen, extends = Map, module = "pheap", name = "Snapshot")]
struct Snapshot {
    core: Arc<SnapCore>,
}

#[pymethods]
impl Snapshot {
    /// Release the snapshot's pin. Values and views already read keep their own.
    fn close(&self) {
        let old = self.core.rx.lock().take();
        drop(old);
    }

    #[getter]
    fn closed(&self) -> bool {
        self.core.rx.lock().is_none()
    }

    #[getter]
    fn txn_id(&self) -> PyResult<u64> {
        Ok(self.core.rx()?.txn_id())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, PyTuple>) -> bool {
        self.close();
        false
    }

    fn __reduce__(&self) -> PyResult<()> {
        Err(PyTypeError::new_err("a snapshot cannot be pickled: it pins this process's view"))
    }
}

/// The native encoding of `value` (its item bytes and out-of-band buffer count): for tests and
/// tools that look at what is stored.
#[pyfunction]
#[pyo3(signature = (value, *, trusted=true))]
fn _encode_value<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
    trusted: bool,
) -> PyResult<(Bound<'py, PyBytes>, usize)> {
    let e = codec::encode(value, trusted)?;
    Ok((PyBytes::new(py, &e.inline), e.buffers.len()))
}

/// Decode item bytes as a stored value with no out-of-line part (tests feed it damaged bytes).
#[pyfunction]
#[pyo3(signature = (data, *, trusted=true))]
fn _decode_value<'py>(py: Python<'py>, data: &[u8], trusted: bool) -> PyResult<Bound<'py, PyAny>> {
    let mut none = ValueBuffers { parts: &[], first: 0, copy: true, owned: None };
    codec::decode(py, data, &mut none, trusted)
}

/// The stored bytes of a key (the canonical encoding).
#[pyfunction]
fn _encode_key<'py>(py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    Ok(PyBytes::new(py, &codec::encode_key(key)?))
}

/// The Python key of stored key bytes.
#[pyfunction]
fn _decode_key<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    codec::decode_key(py, data)
}

#[pymodule]
fn _pheap(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Map>()?;
    m.add_class::<Heap>()?;
    m.add_class::<Transaction>()?;
    m.add_class::<Snapshot>()?;
    m.add_class::<MapIter>()?;
    m.add_class::<PartView>()?;
    m.add_function(wrap_pyfunction!(_after_fork_in_child, m)?)?;
    m.add_function(wrap_pyfunction!(_encode_value, m)?)?;
    m.add_function(wrap_pyfunction!(_decode_value, m)?)?;
    m.add_function(wrap_pyfunction!(_encode_key, m)?)?;
    m.add_function(wrap_pyfunction!(_decode_key, m)?)?;
    m.add("FORMAT_VERSION", pheap::FORMAT_VERSION)?;
    m.add("MAX_KEY_LEN", pheap::MAX_KEY_LEN)?;
    m.add("MAX_VALUE_LEN", pheap::MAX_VALUE_LEN)?;
    m.add("MAX_NESTING", pheap::MAX_NESTING)?;
    m.add("MAX_READERS", pheap::MAX_READERS)?;
    m.add("CODEC_TAG", codec::TAG_PY1)?;
    Ok(())
}
