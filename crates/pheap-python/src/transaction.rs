//! `pheap.Transaction`: a write transaction.

use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use crate::errors::OrPy;
use crate::handles::*;
use crate::map::*;

/// A write transaction: the mapping API over what it has written so far.
#[pyclass(frozen, extends = Map, module = "pheap", name = "Transaction")]
pub(crate) struct Transaction {
    pub(crate) core: Arc<TxnCore>,
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
