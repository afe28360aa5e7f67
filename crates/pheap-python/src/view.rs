//! The buffer protocol, both ways: the module's only `unsafe`.
//!
//! - [`PartView`] exports an out-of-line part of a value as a read-only buffer (what numpy arrays
//!   decoded from a snapshot view). It owns an [`OwnedBytes`]: the snapshot's pin and the
//!   mapping stay alive until the last buffer export and the object itself are gone, whatever
//!   happens to the snapshot, the heap handle or later commits.
//! - [`HeldBuffer`] holds a Python object's buffer (a pickle fragment's out-of-band buffer) while
//!   its bytes are copied into the heap.
#![allow(unsafe_code)]

use std::ffi::c_int;

use pheap::OwnedBytes;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;

/// A read-only, zero-copy view of one out-of-line part of a value, in a pinned snapshot.
#[pyclass(frozen, module = "pheap", name = "PartView")]
#[derive(Debug)]
pub struct PartView {
    bytes: OwnedBytes,
}

impl PartView {
    pub fn new(bytes: OwnedBytes) -> PartView {
        PartView { bytes }
    }
}

#[pymethods]
impl PartView {
    fn __len__(&self) -> usize {
        self.bytes.len()
    }

    fn __repr__(&self) -> String {
        format!("<pheap.PartView of {} bytes>", self.bytes.len())
    }

    /// Exports the part read-only (`PyBUF_WRITABLE` requests are refused with BufferError).
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if flags & ffi::PyBUF_WRITABLE != 0 {
            return Err(PyBufferError::new_err("a pheap view is read-only (use copy=True)"));
        }
        let this = slf.get();
        let ptr = this.bytes.as_ptr() as *mut std::ffi::c_void;
        let len = this.bytes.len() as ffi::Py_ssize_t;
        // SAFETY: `view` is the Py_buffer the interpreter passes to a getbuffer slot. The memory
        // lies in the mapping `this.bytes` keeps alive, and PyBuffer_FillInfo stores a new
        // reference to `slf` in `view.obj`, so the memory outlives every export. It is exported
        // read-only (readonly = 1): nothing writes through it.
        let rc = unsafe { ffi::PyBuffer_FillInfo(view, slf.as_ptr(), ptr, len, 1, flags) };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}
}

/// A Python object's bytes, held (buffer exported) until dropped.
#[derive(Debug)]
pub struct HeldBuffer {
    buf: PyBuffer<u8>,
}

impl HeldBuffer {
    /// Holds the buffer of `obj`, which must be C-contiguous bytes (`PickleBuffer.raw()`).
    pub fn new(obj: &Bound<'_, PyAny>) -> PyResult<HeldBuffer> {
        let buf = PyBuffer::<u8>::get(obj)?;
        if !buf.is_c_contiguous() {
            return Err(PyBufferError::new_err("out-of-band buffer not contiguous"));
        }
        Ok(HeldBuffer { buf })
    }

    /// The bytes. The GIL (`_py`) is held for as long as the slice lives: no Python code runs
    /// to change or release them meanwhile.
    pub fn bytes<'a>(&'a self, _py: Python<'a>) -> &'a [u8] {
        let ptr = self.buf.buf_ptr() as *const u8;
        let len = self.buf.len_bytes();
        if len == 0 {
            return &[];
        }
        // SAFETY: the buffer is exported (held by `self.buf` until drop), C-contiguous (checked
        // in `new`) and `len` bytes long from `ptr`, so the memory is valid for reads for the
        // slice's lifetime; the slice borrows `self` and the GIL token, so the export cannot be
        // released and no Python code (which could write the bytes) runs while it lives.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}
