//! Module functions for tests and tools that look at what is stored.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

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
#[pyo3(signature = (data, *, trusted=true))]
pub(crate) fn _decode_value<'py>(
    py: Python<'py>,
    data: &[u8],
    trusted: bool,
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
