//! Read transactions: a pinned snapshot (I4) and zero-copy reads of it.

use std::fmt;
use std::sync::Arc;

use crate::env::{Shared, meta_signature};
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::meta::Snapshot;
use crate::storage::View;
use crate::storage::registry::Pin;
use crate::trie::Reader;
use zerocopy::{FromBytes, Immutable, KnownLayout};

use super::map::{Iter, Map, Value};

#[cfg(test)]
thread_local! {
    /// Run once between a reader's choice of snapshot and its pin (tests widen the race).
    pub(crate) static BEFORE_PIN: std::cell::Cell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::Cell::new(None) };
}

/// A read-only snapshot of the heap: every read sees the commit that was latest when it began.
/// Never blocks and is never blocked by the writer. `Send + Sync`.
///
/// The slices it returns borrow the transaction: they stay valid (the file's bytes under them
/// are neither reused nor unmapped) until it is dropped.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
/// # let mut tx = heap.begin_write()?;
/// # tx.insert(b"a", b"1")?;
/// # tx.commit()?;
/// let rx = heap.begin_read()?;
/// for entry in rx.iter() {
///     let (key, value) = entry?;
///     println!("{key:?} = {value:?}");
/// }
/// # Ok::<(), pheap::Error>(())
/// ```
pub struct ReadTxn {
    pub(super) shared: Arc<Shared>,
    pub(super) view: Arc<View>,
    pub(super) snap: Snapshot,
    pin: Pin,
}

impl fmt::Debug for ReadTxn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadTxn").field("txn", &self.snap.txn.0).finish()
    }
}

impl ReadTxn {
    /// Pin the latest commit (I4): publish it, fence, and check that it is still the latest;
    /// a writer either sees the pin or has published a newer commit that the check sees.
    pub(crate) fn begin(shared: &Arc<Shared>) -> Result<ReadTxn> {
        shared.check()?;
        let pin = shared.registry.enter()?;
        let pinned = (|| loop {
            let (snap, view, sig) = shared.latest_cached()?;
            #[cfg(test)]
            BEFORE_PIN.with(|hook| hook.take().map(|f| f()));
            shared.registry.pin(pin, snap.txn, snap.alloc.end);
            // No slot written since the choice (the common case), or the full choice agrees.
            if meta_signature(&view) == sig || shared.latest()?.0.txn == snap.txn {
                return Ok((snap, view));
            }
        })();
        match pinned {
            Ok((snap, view)) => Ok(ReadTxn { shared: shared.clone(), view, snap, pin }),
            Err(e) => {
                shared.registry.leave(pin);
                Err(e)
            }
        }
    }

    pub(super) fn reader(&self) -> Reader<'_> {
        Reader { view: &self.view, limit: self.snap.alloc.end }
    }

    pub(crate) fn snapshot(&self) -> &Snapshot {
        &self.snap
    }

    /// The snapshot's top-level map (the methods below are its shorthands).
    pub fn root(&self) -> Map<'_> {
        Map::new(self.reader(), self.shared.hasher, self.snap.map)
    }

    /// The value of `key`, borrowed from the mapped file ([`Map::get`]). A value of up to
    /// 16 KiB is checked against its record's checksum first (DESIGN §2.6): damage is
    /// [`Error::Corrupt`], never wrong bytes. Longer values are not hashed on every read;
    /// [`ReadTxn::get_verified`] does.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
    /// # let mut tx = heap.begin_write()?;
    /// # tx.insert(b"k", b"v")?;
    /// # tx.commit()?;
    /// let rx = heap.begin_read()?;
    /// let value: &[u8] = rx.get("k")?.expect("present"); // no copy: bytes of the mapped file
    /// assert_eq!(value, b"v");
    /// assert_eq!(rx.get("missing")?, None);
    /// # Ok::<(), pheap::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Map::get`]; [`Error::Poisoned`] or [`Error::Forked`] if the handle can no longer be
    /// used.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<&[u8]>> {
        self.shared.check()?;
        self.root().get(key)
    }

    /// As [`ReadTxn::get`], with the record's checksum checked whatever the value's length (one
    /// pass over it).
    ///
    /// # Errors
    ///
    /// As [`ReadTxn::get`].
    pub fn get_verified(&self, key: impl AsRef<[u8]>) -> Result<Option<&[u8]>> {
        self.shared.check()?;
        self.root().get_verified(key)
    }

    /// [`Map::get_value`]: a value of any kind and shape.
    ///
    /// # Errors
    ///
    /// As [`ReadTxn::get`].
    pub fn get_value(&self, key: impl AsRef<[u8]>) -> Result<Option<Value<'_>>> {
        self.shared.check()?;
        self.root().get_value(key)
    }

    /// [`Map::get_as`]: the value viewed in place as a `T`.
    ///
    /// # Errors
    ///
    /// As [`Map::get_as`].
    pub fn get_as<T>(&self, key: impl AsRef<[u8]>) -> Result<Option<&T>>
    where
        T: ?Sized + FromBytes + KnownLayout + Immutable,
    {
        self.shared.check()?;
        self.root().get_as(key)
    }

    /// Is `key` present?
    ///
    /// # Errors
    ///
    /// As [`ReadTxn::get`].
    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.shared.check()?;
        self.root().contains_key(key)
    }

    /// The sub-map under `key` ([`Map::map`]).
    ///
    /// # Errors
    ///
    /// As [`Map::map`].
    pub fn map(&self, key: impl AsRef<[u8]>) -> Result<Option<Map<'_>>> {
        self.shared.check()?;
        self.root().map(key)
    }

    /// Number of top-level entries.
    pub fn len(&self) -> usize {
        self.snap.map.entries as usize
    }

    /// Does the snapshot hold no top-level entry?
    pub fn is_empty(&self) -> bool {
        self.snap.map.entries == 0
    }

    /// The snapshot's transaction id.
    pub fn txn_id(&self) -> u64 {
        self.snap.txn.0
    }

    /// Every top-level entry, in hash order ([`Map::iter`]).
    pub fn iter(&self) -> Iter<'_> {
        self.root().iter()
    }
}

impl<'a> IntoIterator for &'a ReadTxn {
    type Item = Result<(&'a [u8], Value<'a>)>;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl Drop for ReadTxn {
    fn drop(&mut self) {
        // A forked child's copy must leave the parent's pin alone.
        if !self.shared.forked() {
            self.shared.registry.leave(self.pin);
        }
    }
}
