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

#[macro_use]
mod macros;

mod codec;
mod errors;
mod handles;
mod heap;
mod iter;
mod map;
mod snapshot;
mod tools;
mod transaction;
mod view;

use pyo3::prelude::*;

use heap::Heap;
use iter::MapIter;
use map::Map;
use snapshot::Snapshot;
use transaction::Transaction;
use view::PartView;

#[pymodule]
fn _pheap(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Map>()?;
    m.add_class::<Heap>()?;
    m.add_class::<Transaction>()?;
    m.add_class::<Snapshot>()?;
    m.add_class::<MapIter>()?;
    m.add_class::<PartView>()?;
    m.add_function(wrap_pyfunction!(handles::_after_fork_in_child, m)?)?;
    m.add_function(wrap_pyfunction!(tools::_encode_value, m)?)?;
    m.add_function(wrap_pyfunction!(tools::_decode_value, m)?)?;
    m.add_function(wrap_pyfunction!(tools::_encode_key, m)?)?;
    m.add_function(wrap_pyfunction!(tools::_decode_key, m)?)?;
    m.add_function(wrap_pyfunction!(tools::_pickle_fragments, m)?)?;
    m.add_function(wrap_pyfunction!(tools::_manifest_json, m)?)?;
    m.add_function(wrap_pyfunction!(tools::shard_of, m)?)?;
    m.add_function(wrap_pyfunction!(tools::_route, m)?)?;
    m.add("FORMAT_VERSION", pheap::FORMAT_VERSION)?;
    m.add("MAX_KEY_LEN", pheap::MAX_KEY_LEN)?;
    m.add("MAX_VALUE_LEN", pheap::MAX_VALUE_LEN)?;
    m.add("MAX_NESTING", pheap::MAX_NESTING)?;
    m.add("MAX_READERS", pheap::MAX_READERS)?;
    m.add("CODEC_TAG", codec::TAG_PY1)?;
    Ok(())
}
