//! `pheap.Snapshot`: a pinned snapshot.

use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::handles::*;
use crate::map::*;

/// A pinned snapshot: the mapping API, read-only.
#[pyclass(frozen, extends = Map, module = "pheap", name = "Snapshot")]
pub(crate) struct Snapshot {
    pub(crate) core: Arc<SnapCore>,
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
