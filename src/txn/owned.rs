//! Handles that own their snapshot (for bindings and threads): [`SharedRead`], [`OwnedMap`],
//! [`OwnedBytes`], [`OwnedValue`], [`OwnedIter`]; and [`IterPosition`], where an iteration
//! stands.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use super::map::{Map, Value, whole};
use super::read::ReadTxn;
use super::readable::{Readable, partition_range};
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::format::*;
use crate::trie::{Cursor, MapRoot, Position};

/// Where an ordered iteration stands: after the last entry it returned. Save it
/// ([`IterPosition::to_bytes`]) and continue later, in this snapshot or a newer one, in this
/// process or another ([`Readable::iter_after`], [`OwnedMap::iter_after`]): the iteration
/// goes on with the entries that come after it in the map's order (entries added behind it since
/// are not seen, entries removed ahead of it are not returned).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IterPosition(pub(super) Position);

impl IterPosition {
    /// The position as bytes (8 bytes of order, then the key).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.0.order.to_le_bytes().to_vec();
        out.extend_from_slice(&self.0.key);
        out
    }

    /// A position saved by [`IterPosition::to_bytes`]; `None` for bytes it cannot have written.
    pub fn from_bytes(bytes: &[u8]) -> Option<IterPosition> {
        let (order, key) = bytes.split_first_chunk::<8>()?;
        (key.len() <= MAX_KEY_LEN).then(|| {
            IterPosition(Position { order: u64::from_le_bytes(*order), key: key.to_vec() })
        })
    }
}

/// A read transaction that can be shared between threads and owners: `Clone` (an `Arc`),
/// `Send + Sync`, dereferencing to [`ReadTxn`]. Its snapshot stays pinned, and its mapping
/// alive, until the last clone and the last [`OwnedBytes`] or [`OwnedIter`] taken from it drop.
#[derive(Clone, Debug)]
pub struct SharedRead(Arc<ReadTxn>);

impl Deref for SharedRead {
    type Target = ReadTxn;
    fn deref(&self) -> &ReadTxn {
        &self.0
    }
}

impl From<ReadTxn> for SharedRead {
    fn from(rx: ReadTxn) -> SharedRead {
        SharedRead(Arc::new(rx))
    }
}

impl SharedRead {
    /// The map at the end of `path` (a key per level; empty: the top level), in a handle that
    /// owns the snapshot: it, and everything read from it, can outlive this `SharedRead`,
    /// cross threads, and be held by a binding.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
    /// # let mut tx = heap.begin_write()?;
    /// # pheap::Writable::insert(&mut tx, "k", "v")?;
    /// # tx.commit()?;
    /// let top = heap.begin_read_shared()?.map_owned::<&str>(&[])?.expect("the top level");
    /// let v = top.get("k")?.expect("present");
    /// let t = std::thread::spawn(move || v.to_vec()); // the snapshot travels with it
    /// assert_eq!(t.join().unwrap(), b"v");
    /// # Ok::<(), pheap::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Readable::map_path`].
    pub fn map_owned<K: AsRef<[u8]>>(&self, path: &[K]) -> Result<Option<OwnedMap>> {
        let root = self.0.map_path(path)?.map(|m| m.root());
        Ok(root.map(|root| OwnedMap { rx: self.clone(), root }))
    }

    /// An owning handle of `value`, read from this snapshot (through its [`Deref`] to
    /// [`ReadTxn`]): a binding reads in place and takes ownership only of what must outlive
    /// the call (parts handed out as zero-copy views).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] if `value` does not lie in this snapshot's mapping, or a part is
    /// damaged.
    pub fn own_value(&self, value: &Value<'_>) -> Result<OwnedValue> {
        Ok(OwnedValue {
            key: self.own(value.key())?,
            kind: value.kind(),
            inline: self.own(value.inline())?,
            parts: value.parts().map(|p| self.own(p?)).collect::<Result<Vec<_>>>()?,
            map_len: value.map_len(),
        })
    }

    fn own(&self, b: &[u8]) -> Result<OwnedBytes> {
        if b.is_empty() {
            return Ok(OwnedBytes { rx: self.0.clone(), off: 0, len: 0 });
        }
        let off = self
            .0
            .view()
            .offset_of(b)
            .ok_or_else(|| crate::error::corrupt(0, "a slice outside the mapping"))?;
        Ok(OwnedBytes { rx: self.0.clone(), off, len: b.len() })
    }
}

/// A map of a snapshot, owning the snapshot ([`SharedRead::map_owned`]): the reads of
/// [`Readable`], each yielding values that own it too (`Clone + Send + Sync + 'static`), for
/// bindings and threads. [`OwnedMap::as_map`] gives the borrowed reads.
#[derive(Clone)]
pub struct OwnedMap {
    rx: SharedRead,
    root: MapRoot,
}

impl fmt::Debug for OwnedMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedMap").field("len", &self.root.entries).finish()
    }
}

impl OwnedMap {
    /// The map as a borrowed [`Map`] (every [`Readable`] read, zero-copy, borrowing `self`).
    ///
    /// # Errors
    ///
    /// As [`Readable::as_map`].
    pub fn as_map(&self) -> Result<Map<'_>> {
        Map::new(self.rx.shared(), self.rx.reader(), self.root).as_map()
    }

    /// [`Readable::get`], owning.
    ///
    /// # Errors
    ///
    /// As [`Readable::get`].
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<OwnedBytes>> {
        self.as_map()?.get(key)?.map(|b| self.rx.own(b)).transpose()
    }

    /// [`Readable::get_value`], owning.
    ///
    /// # Errors
    ///
    /// As [`Readable::get_value`].
    pub fn get_value(&self, key: impl AsRef<[u8]>) -> Result<Option<OwnedValue>> {
        self.as_map()?.get_value(key)?.map(|v| self.rx.own_value(&v)).transpose()
    }

    /// [`Readable::contains_key`].
    ///
    /// # Errors
    ///
    /// As [`Readable::contains_key`].
    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.as_map()?.contains_key(key)
    }

    /// [`Readable::map`], owning.
    ///
    /// # Errors
    ///
    /// As [`Readable::map`].
    pub fn map(&self, key: impl AsRef<[u8]>) -> Result<Option<OwnedMap>> {
        let root = self.as_map()?.map(key)?.map(|m| m.root());
        Ok(root.map(|root| OwnedMap { rx: self.rx.clone(), root }))
    }

    /// [`Readable::len`].
    ///
    /// # Errors
    ///
    /// As [`Readable::len`].
    pub fn len(&self) -> Result<usize> {
        self.as_map()?.len()
    }

    /// [`Readable::is_empty`].
    ///
    /// # Errors
    ///
    /// As [`Readable::is_empty`].
    pub fn is_empty(&self) -> Result<bool> {
        self.as_map()?.is_empty()
    }

    /// [`Readable::iter`], owning.
    ///
    /// # Errors
    ///
    /// As [`Readable::as_map`].
    pub fn iter(&self) -> Result<OwnedIter> {
        self.cursor(0, None, None)
    }

    /// [`Readable::iter_after`], owning.
    ///
    /// # Errors
    ///
    /// As [`Readable::as_map`].
    pub fn iter_after(&self, pos: &IterPosition) -> Result<OwnedIter> {
        self.cursor(0, None, Some(pos.0.clone()))
    }

    /// [`Readable::iter_partition`], owning. Panics unless `i < n`.
    ///
    /// # Errors
    ///
    /// As [`Readable::as_map`].
    pub fn iter_partition(&self, i: usize, n: usize) -> Result<OwnedIter> {
        let (lo, hi) = partition_range(i, n);
        self.cursor(lo, hi, None)
    }

    fn cursor(&self, lo: u64, hi: Option<u64>, after: Option<Position>) -> Result<OwnedIter> {
        self.as_map()?;
        Ok(OwnedIter { rx: self.rx.clone(), cursor: Cursor::new(self.root, lo, hi, after) })
    }
}

/// Bytes of a value, owning the snapshot they belong to: `Clone + Send + Sync + 'static`,
/// dereferencing to `[u8]` with no copy. The pin and the mapping stay alive until the last
/// handle drops.
#[derive(Clone)]
pub struct OwnedBytes {
    rx: Arc<ReadTxn>,
    off: u64,
    len: usize,
}

impl fmt::Debug for OwnedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedBytes").field("len", &self.len).finish()
    }
}

impl Deref for OwnedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // Checked when the handle was made, against the same view and limit: cannot fail.
        self.rx.view().slice(self.off, self.len as u64, self.rx.snap.alloc.end).unwrap_or(&[])
    }
}

impl AsRef<[u8]> for OwnedBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// A value owning its snapshot ([`Value`] as [`OwnedBytes`]): its kind, inline part and
/// out-of-line parts (parts checked as [`Value::part`] checks them).
#[derive(Clone, Debug)]
pub struct OwnedValue {
    key: OwnedBytes,
    kind: Kind,
    inline: OwnedBytes,
    parts: Vec<OwnedBytes>,
    map_len: Option<usize>,
}

impl OwnedValue {
    /// The value's kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The inline part (empty for a map).
    pub fn inline(&self) -> &OwnedBytes {
        &self.inline
    }

    /// The out-of-line parts, in order.
    pub fn parts(&self) -> &[OwnedBytes] {
        &self.parts
    }

    /// The number of entries of a sub-map; `None` for other kinds.
    pub fn map_len(&self) -> Option<usize> {
        self.map_len
    }

    /// The value as one byte string, as [`Value::bytes`] gives it.
    ///
    /// # Errors
    ///
    /// As [`Value::bytes`].
    pub fn bytes(&self) -> Result<&OwnedBytes> {
        Ok(whole(&self.key, self.kind, self.inline.is_empty(), &self.parts)?
            .unwrap_or(&self.inline))
    }
}

/// An iterator owning its snapshot, over one map in the map's order ([`OwnedMap::iter`]);
/// resumable ([`OwnedIter::position`], [`OwnedMap::iter_after`]). `Send + Sync + 'static`.
#[derive(Debug)]
pub struct OwnedIter {
    rx: SharedRead,
    cursor: Cursor,
}

impl OwnedIter {
    /// Where the iteration stands.
    pub fn position(&self) -> Option<IterPosition> {
        self.cursor.position(&self.rx.0.reader()).map(IterPosition)
    }
}

impl Iterator for OwnedIter {
    type Item = Result<(OwnedBytes, OwnedValue)>;
    fn next(&mut self) -> Option<Self::Item> {
        let reader = self.rx.0.reader();
        let hasher = self.rx.0.shared().hasher;
        let l = match self.cursor.next(&reader, &hasher) {
            Ok(Some(l)) => l,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        let item = Value::of(reader, &l).and_then(|v| {
            let value = self.rx.own_value(&v)?;
            Ok((value.key.clone(), value))
        });
        Some(item)
    }
}
