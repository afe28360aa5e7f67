//! `pheap.MapIterator`: iteration over a map, streamed.

use parking_lot::Mutex;
use pheap::prelude::*;
use pheap::{IterPosition, OwnedIter, SharedRead};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors::{self, OrPy};
use crate::handles::*;
use crate::map::*;

/// What an iteration yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Yield {
    Keys,
    Values,
    Items,
}

/// Iteration over a map, streamed in the map's order (the one order of every iteration).
#[pyclass(frozen, module = "pheap", name = "MapIterator")]
pub(crate) struct MapIter {
    pub(crate) map: Map,
    pub(crate) what: Yield,
    pub(crate) src: Mutex<Source>,
}

pub(crate) enum Source {
    /// A snapshot's (a heap's iteration takes one): an iterator owning it (`None`: the map
    /// does not exist).
    Snapshot(Option<Box<OwnedIter>>),
    /// A transaction's: each step continues after the last key returned, from the map as the
    /// transaction holds it then (it may change between steps: what was added behind the
    /// position is not seen, what was removed ahead of it is not returned).
    Txn { after: Option<IterPosition>, done: bool },
}

impl MapIter {
    pub(crate) fn new(map: &Map, what: Yield) -> PyResult<MapIter> {
        MapIter::with_partition(map, what, None)
    }

    /// An iteration of part `i` of `k` of the map's order (`None`: all of it). A part is read
    /// from one snapshot; a transaction's map is iterated whole only.
    pub(crate) fn with_partition(
        map: &Map,
        what: Yield,
        part: Option<(usize, usize)>,
    ) -> PyResult<MapIter> {
        let owned = |rx: SharedRead| -> PyResult<Source> {
            let it = match rx.map_owned(&map.path).py_err()? {
                Some(m) => Some(Box::new(match part {
                    Some((i, k)) => m.iter_partition(i, k).py_err()?,
                    None => m.iter().py_err()?,
                })),
                None => None, // no such map: nothing to iterate
            };
            Ok(Source::Snapshot(it))
        };
        let src = match &map.target {
            Target::Heap(h) => owned(h.heap()?.begin_read_shared().py_err()?)?,
            Target::Snap(s) => owned(s.rx()?)?,
            Target::Txn(_) if part.is_some() => {
                return Err(pyo3::exceptions::PyValueError::new_err(
                    "part= iterates a heap or a snapshot, not a transaction",
                ));
            }
            Target::Txn(_) => Source::Txn { after: None, done: false },
        };
        Ok(MapIter {
            map: Map { target: map.target.clone(), path: map.path.clone() },
            what,
            src: Mutex::new(src),
        })
    }
}

#[pymethods]
impl MapIter {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    pub(crate) fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let mut src = self.src.try_lock().ok_or_else(|| {
            errors::new("TransactionError", "the iterator is in use by another call".into())
        })?;
        let values = self.what != Yield::Keys;
        let (k, v) = match &mut *src {
            Source::Snapshot(it) => {
                if let Target::Snap(s) = &self.map.target {
                    s.rx()?; // closed or forked snapshots end their iterations
                }
                let Some(item) = it.as_mut().and_then(|it| it.next()) else { return Ok(None) };
                let (k, v) = item.py_err()?;
                let value = if values { Some(self.map.owned_value_of(py, &k, &v)?) } else { None };
                (self.map.py_key(py, &k)?, value)
            }
            Source::Txn { done: true, .. } => return Ok(None),
            Source::Txn { after, done } => {
                let step = self.map.read(|m, _| {
                    let Some(m) = m else { return Ok(None) };
                    let mut it = match after.as_ref() {
                        Some(p) => m.iter_after(p),
                        None => m.iter(),
                    };
                    let Some(item) = it.next() else { return Ok(None) };
                    let (k, v) = item.py_err()?;
                    let value = if values {
                        Some(self.map.value_of(py, k, &v, None, false)?)
                    } else {
                        None
                    };
                    Ok(Some((k.to_vec(), value, it.position())))
                })?;
                let Some((k, value, pos)) = step else {
                    *done = true;
                    return Ok(None);
                };
                *after = pos;
                (self.map.py_key(py, &k)?, value)
            }
        };
        Ok(Some(match (self.what, v) {
            (Yield::Values, Some(v)) => v,
            (Yield::Items, Some(v)) => PyTuple::new(py, [k, v])?.into_any(),
            _ => k,
        }))
    }
}
