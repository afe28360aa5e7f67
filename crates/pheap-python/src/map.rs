//! `pheap.Map`: the mapping API of a heap, a snapshot, a transaction and their sub-maps.

use pheap::prelude::*;
use pheap::{Kind, OwnedValue, SharedRead, Value, WriteTxn};
use pyo3::exceptions::{PyKeyError, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple, PyType};

use crate::codec::{self, Buffers};
use crate::errors::{self, OrPy};
use crate::handles::*;
use crate::heap::*;
use crate::iter::*;
use crate::view::PartView;

pub(crate) fn resolve<'a>(
    root: pheap::Map<'a>,
    path: &[Vec<u8>],
) -> PyResult<Option<pheap::Map<'a>>> {
    if path.is_empty() { Ok(Some(root)) } else { root.map_path(path).py_err() }
}

/// Out-of-band buffers of a value being decoded: zero-copy views of its owned parts when it was
/// read from a snapshot, copies otherwise (a transaction may reuse its space before it commits)
/// or when asked (`copy`: writable).
pub(crate) struct ValueBuffers<'a> {
    pub(crate) parts: &'a [&'a [u8]],
    pub(crate) first: usize,
    pub(crate) copy: bool,
    pub(crate) owned: Option<&'a OwnedValue>,
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
        let part = owned.parts().get(idx).ok_or_else(|| errors::corrupt("part missing".into()))?;
        Ok(Bound::new(py, PartView::new(part.clone()))?.into_any())
    }
}

/// The mapping API: a heap, a snapshot, a transaction, or a sub-map of one of them.
#[pyclass(subclass, frozen, module = "pheap", name = "Map")]
#[derive(Debug)]
pub(crate) struct Map {
    pub(crate) target: Target,
    pub(crate) path: Vec<Vec<u8>>,
}

impl Map {
    pub(crate) fn opts(&self) -> &Options {
        &self.target.heap().opts
    }

    pub(crate) fn key(&self, k: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
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

    pub(crate) fn py_key<'py>(&self, py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        if self.opts().raw { Ok(PyBytes::new(py, b).into_any()) } else { codec::decode_key(py, b) }
    }

    pub(crate) fn child(&self, key: Vec<u8>) -> Map {
        let mut path = self.path.clone();
        path.push(key);
        Map { target: self.target.clone(), path }
    }

    /// Run `f` on the map at the path (`None` where the path does not exist) and the snapshot it
    /// was read from (`None` in a transaction).
    pub(crate) fn read<R>(
        &self,
        f: impl FnOnce(Option<pheap::Map<'_>>, Option<&SharedRead>) -> PyResult<R>,
    ) -> PyResult<R> {
        match &self.target {
            Target::Heap(h) => {
                let rx = h.heap()?.begin_read_shared().py_err()?;
                f(resolve(rx.as_map().py_err()?, &self.path)?, Some(&rx))
            }
            Target::Snap(s) => {
                let rx = s.rx()?;
                f(resolve(rx.as_map().py_err()?, &self.path)?, Some(&rx))
            }
            Target::Txn(t) => t.with(|tx| f(resolve(tx.as_map().py_err()?, &self.path)?, None)),
        }
    }

    /// Run `f` in a write transaction: the handle's own, or (on a heap) one of its own that
    /// commits when `f` reports a change. The GIL is released while waiting for the writer lock
    /// and while committing.
    pub(crate) fn write<R>(
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
                let mut tx = begin_write(py, &heap, None)?;
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

    pub(crate) fn encode(&self, value: &Bound<'_, PyAny>) -> PyResult<codec::Encoded> {
        if self.opts().raw {
            let b = pyo3::buffer::PyBuffer::<u8>::get(value).map_err(|_| {
                PyTypeError::new_err("with codec=\"raw\" a value is bytes (or a bytes-like object)")
            })?;
            return Ok(codec::Encoded { inline: b.to_vec(value.py())?, buffers: Vec::new() });
        }
        codec::encode(value, self.opts().trusted.writes())
    }

    pub(crate) fn put(
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
    pub(crate) fn decode<'py>(
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

    pub(crate) fn value_of<'py>(
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

    pub(crate) fn owned_value_of<'py>(
        &self,
        py: Python<'py>,
        key: &[u8],
        v: &OwnedValue,
    ) -> PyResult<Bound<'py, PyAny>> {
        let parts: Vec<&[u8]> = v.parts().iter().map(|p| &p[..]).collect();
        self.decode(py, key, v.kind(), v.inline(), &parts, Some(v), false)
    }

    pub(crate) fn lookup<'py>(
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
    pub(crate) fn iter_items<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<impl Iterator<Item = PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> + 'py>
    {
        let it = Bound::new(py, MapIter::new(self, Yield::Items)?)?;
        Ok(std::iter::from_fn(move || match it.get().__next__(py) {
            Ok(Some(pair)) => Some(pair.extract::<(Bound<'py, PyAny>, Bound<'py, PyAny>)>()),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }))
    }

    pub(crate) fn handle_of(&self, py: Python<'_>) -> PyResult<Py<Heap>> {
        Heap::from_core(py, self.target.heap().clone())
    }
}

pub(crate) fn views(py: Python<'_>, name: &str) -> PyResult<Py<PyType>> {
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

    /// Bring this map into the page cache, waiting for it, with the GIL released: a heap's
    /// whole file at the disk's sequential speed (a sealed heap's, such as a publication's, in
    /// 2 MiB folios that every process maps with one page-table entry each), or a sub-map's (or
    /// a snapshot's) records level by level. Returns the bytes read. ``background=True``
    /// returns at once a ``concurrent.futures.Future`` of that number (on a heap or a snapshot,
    /// not in a transaction): what a server starts after a reboot before it takes requests.
    #[pyo3(signature = (*, background=false))]
    fn prefetch<'py>(&self, py: Python<'py>, background: bool) -> PyResult<Bound<'py, PyAny>> {
        let path = self.path.clone();
        let job: Box<dyn FnOnce() -> pheap::Result<u64> + Send> = match &self.target {
            Target::Heap(h) => {
                let heap = h.heap()?;
                Box::new(move || {
                    if path.is_empty() {
                        return heap.prefetch();
                    }
                    let rx = heap.begin_read()?;
                    rx.map_path(&path)?.map_or(Ok(0), |m| m.prefetch())
                })
            }
            Target::Snap(s) => {
                let rx = s.rx()?;
                Box::new(move || rx.as_map()?.map_path(&path)?.map_or(Ok(0), |m| m.prefetch()))
            }
            Target::Txn(_) if background => {
                return Err(PyTypeError::new_err(
                    "prefetch(background=True) needs a heap or a snapshot, not a transaction",
                ));
            }
            Target::Txn(t) => {
                let n =
                    t.with(|tx| Ok(resolve(tx.as_map().py_err()?, &path)?.map(|m| m.prefetch())))?;
                return Ok(n.transpose().py_err()?.unwrap_or(0).into_pyobject(py)?.into_any());
            }
        };
        if !background {
            return Ok(py.detach(job).py_err()?.into_pyobject(py)?.into_any());
        }
        let future = py.import("concurrent.futures")?.getattr("Future")?.call0()?;
        let done = future.clone().unbind();
        std::thread::Builder::new()
            .name("pheap-prefetch".into())
            .spawn(move || {
                let r = job();
                Python::attach(|py| {
                    let set = match r.py_err() {
                        Ok(n) => done.call_method1(py, "set_result", (n,)),
                        Err(e) => done.call_method1(py, "set_exception", (e.value(py),)),
                    };
                    if let Err(e) = set {
                        e.write_unraisable(py, None);
                    }
                })
            })
            .map_err(|e| {
                pyo3::exceptions::PyOSError::new_err(format!("cannot start a thread: {e}"))
            })?;
        Ok(future)
    }

    fn __len__(&self) -> PyResult<usize> {
        self.read(|m, _| m.map_or(Ok(0), |m| m.len().py_err()))
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
            if resolve(tx.as_map().py_err()?, &self.path)?.is_none() {
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
            let Some(m) = resolve(tx.as_map().py_err()?, &self.path)? else {
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
            let Some(m) = resolve(tx.as_map().py_err()?, &self.path)? else {
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
            if let Some(m) = resolve(tx.as_map().py_err()?, &self.path)?
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
                // Ctrl-C ends a long update: the exception aborts its transaction (on a heap).
                if n.is_multiple_of(1024) {
                    py.check_signals()?;
                }
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
            if resolve(tx.as_map().py_err()?, &self.path)?.is_none() {
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
        MapIter::new(self, Yield::Keys)
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
        MapIter::new(self, Yield::Values)
    }

    fn _iter_items(&self) -> PyResult<MapIter> {
        MapIter::new(self, Yield::Items)
    }

    /// The map's entries as `pyarrow.RecordBatch`es of at most `size` rows (a `key` column, then
    /// the values' fields, or one `value` column), of part `part=(i, k)` only when given.
    #[pyo3(signature = (size=None, part=None, schema=None))]
    fn batches<'py>(
        slf: &Bound<'py, Self>,
        size: Option<&Bound<'py, PyAny>>,
        part: Option<&Bound<'py, PyAny>>,
        schema: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let arrow = slf.py().import("pheap._arrow")?;
        let size = match size {
            Some(s) => s.clone(),
            None => arrow.getattr("DEFAULT_SIZE")?,
        };
        arrow.getattr("batches")?.call1((slf, size, part, schema))
    }

    /// Insert one entry per row of `data` (a `pyarrow` RecordBatch or Table, a pandas
    /// DataFrame, or an iterable of them): the `key` column's value is the key, the other
    /// columns the value. Returns the number of rows.
    #[pyo3(signature = (data, key="key", trusted=None))]
    fn insert_batches<'py>(
        slf: &Bound<'py, Self>,
        data: &Bound<'py, PyAny>,
        key: &str,
        trusted: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let f = slf.py().import("pheap._arrow")?.getattr("insert_batches")?;
        match trusted {
            Some(t) => f.call1((slf, data, key, t)),
            None => f.call1((slf, data, key)),
        }
    }

    /// The items of part `i` of `k` of this map (its order cut into `k` ranges of hash space:
    /// every key in exactly one part), from one snapshot.
    fn _iter_part(&self, i: usize, k: usize) -> PyResult<MapIter> {
        if k == 0 || i >= k {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "part=(i, k) needs 0 <= i < k, not ({i}, {k})"
            )));
        }
        MapIter::with_partition(self, Yield::Items, Some((i, k)))
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
