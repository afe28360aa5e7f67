//! Module functions for tests and tools that look at what is stored.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use pheap::{Kind, Readable};

use crate::errors::OrPy;

use crate::codec::{self};
use crate::map::*;

/// The native encoding of `value` (its item bytes and out-of-band buffer count): for tests and
/// tools that look at what is stored.
#[pyfunction]
#[pyo3(signature = (value, *, trusted=true))]
pub(crate) fn _encode_value<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
    trusted: bool,
) -> PyResult<(Bound<'py, PyBytes>, usize)> {
    let e = codec::encode(value, trusted)?;
    Ok((PyBytes::new(py, &e.inline), e.buffers.len()))
}

/// Decode item bytes as a stored value with no out-of-line part (tests feed it damaged bytes).
#[pyfunction]
#[pyo3(signature = (data, *, trusted=codec::Trust::All))]
pub(crate) fn _decode_value<'py>(
    py: Python<'py>,
    data: &[u8],
    trusted: codec::Trust,
) -> PyResult<Bound<'py, PyAny>> {
    let mut none = ValueBuffers { parts: &[], first: 0, copy: true, owned: None };
    codec::decode(py, data, &mut none, trusted)
}

/// The stored bytes of a key (the canonical encoding).
#[pyfunction]
pub(crate) fn _encode_key<'py>(
    py: Python<'py>,
    key: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    Ok(PyBytes::new(py, &codec::encode_key(key)?))
}

/// The Python key of stored key bytes.
#[pyfunction]
pub(crate) fn _decode_key<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    codec::decode_key(py, data)
}

/// The pickle fragments of every value in the map and the maps in it (the latest commit), as
/// bytes: publishing lists the globals they need without loading them.
#[pyfunction]
pub(crate) fn _pickle_fragments<'py>(
    py: Python<'py>,
    m: &Bound<'py, Map>,
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    m.get().read(|map, _| match map {
        Some(map) => fragments_of(py, map, &out, 0),
        None => Ok(()),
    })?;
    Ok(out)
}

fn fragments_of(
    py: Python<'_>,
    map: pheap::Map<'_>,
    out: &Bound<'_, PyList>,
    depth: usize,
) -> PyResult<()> {
    for item in map.iter() {
        let (k, v) = item.py_err()?;
        match v.kind() {
            Kind::Map if depth < pheap::MAX_NESTING => {
                let sub = map.map(k).py_err()?;
                if let Some(sub) = sub {
                    fragments_of(py, sub, out, depth + 1)?;
                }
            }
            Kind::Tagged(codec::TAG_PY1) => {
                let parts = v.parts().collect::<pheap::Result<Vec<_>>>().py_err()?;
                let item = match (v.inline(), parts.first()) {
                    (b"", Some(p)) => *p,
                    (inline, _) => inline,
                };
                for f in codec::pickle_fragments(py, item)? {
                    out.append(PyBytes::new(py, f))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A publication's manifest (DESIGN §9.1) as text, for the heap sealed with `digest` (32
/// hexadecimal digits); `pickles` is the survey as JSON text, or None.
#[pyfunction]
#[pyo3(signature = (digest, size, entries, pickles=None))]
pub(crate) fn _manifest_json(
    digest: &str,
    size: u64,
    entries: u64,
    pickles: Option<&str>,
) -> PyResult<String> {
    let bytes = (0..16)
        .map(|i| digest.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .filter(|_| digest.len() == 32)
        .ok_or_else(|| pyo3::exceptions::PyValueError::new_err("digest: 32 hexadecimal digits"))?;
    let d: [u8; 16] = bytes.try_into().expect("16 bytes");
    Ok(pheap::publish::manifest_json(&d, size, entries, pickles))
}

/// The shard of `key` in a set of `n` shards (DESIGN §2.11): a seedless hash of the key's
/// canonical bytes, the same in every process and language; doubling `n` splits shard `i` into
/// `2i` and `2i + 1`.
#[pyfunction]
pub(crate) fn shard_of(key: &Bound<'_, PyAny>, n: i64) -> PyResult<u32> {
    Ok(pheap::shard_of(&codec::encode_key(key)?, shard_count(n)?))
}

fn shard_count(n: i64) -> PyResult<std::num::NonZeroU32> {
    u32::try_from(n).ok().and_then(std::num::NonZeroU32::new).ok_or_else(|| {
        pyo3::exceptions::PyValueError::new_err(format!(
            "n (the number of shards) must be 1 to {}, not {n}",
            u32::MAX
        ))
    })
}

/// The positions of `keys` grouped by their shard of `n` (as `shard_of`): a dict from shard to
/// the list of positions routed there, in order. What a job's writer routes rows with, one call
/// per batch instead of one per row.
#[pyfunction]
pub(crate) fn _route<'py>(
    py: Python<'py>,
    keys: &Bound<'py, PyList>,
    n: i64,
) -> PyResult<Bound<'py, PyDict>> {
    let n = shard_count(n)?;
    let mut groups: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (i, key) in keys.iter().enumerate() {
        groups.entry(pheap::shard_of(&codec::encode_key(&key)?, n)).or_default().push(i);
    }
    let out = PyDict::new(py);
    for (shard, pos) in groups {
        out.set_item(shard, pos)?;
    }
    Ok(out)
}
