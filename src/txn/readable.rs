//! The read API, written once: [`Readable`] serves a read transaction, a write transaction, a
//! map of either, and a sub-map being changed; and the one iterator every iteration returns.

use std::fmt;

use zerocopy::{FromBytes, Immutable, KnownLayout};

use super::map::{Map, MapMut, Value, cast};
use super::owned::IterPosition;
use super::{ReadTxn, WriteTxn};
use crate::error::{Error, Result};
use crate::format::Kind;
use crate::trie::{Cursor, MapRoot, Position, VERIFY_ON_READ_MAX};

/// Reads of one map, for every handle that has one: `&ReadTxn` (its top-level map), `&WriteTxn`
/// (its top-level map as it has changed it), [`Map`] (any map of either), `&MapMut` (a sub-map
/// being changed). One required method, [`Readable::as_map`]; the reads are written once, here.
/// (An owned map, [`crate::OwnedMap`], has the same reads yielding values that own their
/// snapshot.)
///
/// Everything returned borrows the handle (`'a`): the bytes are the mapped file's, no copy.
/// Every read checks the handle first: a forked child's inherited handle, or a poisoned one,
/// reads nothing ([`Error::Forked`], [`Error::Poisoned`]: DESIGN §5.7).
///
/// ```
/// use pheap::prelude::*; // Readable (and Writable)
/// # let dir = tempfile::tempdir()?;
/// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
/// # let mut tx = heap.begin_write()?;
/// # tx.insert(b"k", b"v")?;
/// # tx.commit()?;
/// let rx = heap.begin_read()?;
/// let value: &[u8] = rx.get("k")?.expect("present"); // no copy: bytes of the mapped file
/// assert_eq!(value, b"v");
/// assert_eq!(rx.get("missing")?, None);
/// assert_eq!(rx.len()?, 1);
/// # Ok::<(), pheap::Error>(())
/// ```
// `self` by value: the implementors are references and the `Copy` `Map`, so it is a borrow.
#[allow(clippy::wrong_self_convention)]
pub trait Readable<'a>: Sized {
    /// The map the reads go to, as the handle sees it now.
    ///
    /// # Errors
    ///
    /// [`Error::Forked`] or [`Error::Poisoned`] if the handle can no longer be used,
    /// [`Error::TxnFailed`] after an earlier failure of a write transaction, [`Error::Corrupt`]
    /// if a record on the path to a sub-map being changed is damaged.
    fn as_map(self) -> Result<Map<'a>>;

    /// The value of `key` as one byte string, borrowed from the mapped file. A value of up to
    /// 16 KiB is checked against its record's checksum first (DESIGN §2.6): damage is
    /// [`Error::Corrupt`], never wrong bytes. Longer values are not hashed on every read;
    /// [`Readable::get_verified`] does.
    ///
    /// # Errors
    ///
    /// As [`Readable::as_map`]; [`Error::WrongKind`] if `key` holds a map,
    /// [`Error::MultiPart`] if it holds a value of several parts ([`Readable::get_value`] reads
    /// those), [`Error::Corrupt`] if a record on the key's path is damaged.
    fn get(self, key: impl AsRef<[u8]>) -> Result<Option<&'a [u8]>> {
        self.as_map()?.bytes_of(key.as_ref(), VERIFY_ON_READ_MAX)
    }

    /// As [`Readable::get`], with the checksums checked whatever the value's length (one pass
    /// over it).
    ///
    /// # Errors
    ///
    /// As [`Readable::get`].
    fn get_verified(self, key: impl AsRef<[u8]>) -> Result<Option<&'a [u8]>> {
        self.as_map()?.bytes_of(key.as_ref(), usize::MAX)
    }

    /// The value of `key` whatever its kind and shape.
    ///
    /// # Errors
    ///
    /// As [`Readable::as_map`]; [`Error::Corrupt`] if a record on the key's path is damaged.
    fn get_value(self, key: impl AsRef<[u8]>) -> Result<Option<Value<'a>>> {
        let map = self.as_map()?;
        match map.leaf(key.as_ref(), VERIFY_ON_READ_MAX)? {
            Some(l) => Value::of(map.reader(), &l).map(Some),
            None => Ok(None),
        }
    }

    /// The value of `key` viewed in place as a `T`: a `#[repr(C)]` record or a slice such as
    /// `[f64]`, with no copy ([`Value::get_as`] of its value). Inline values are 8-byte
    /// aligned, values of 4 KiB or more 64-byte aligned.
    ///
    /// ```
    /// use pheap::prelude::*;
    /// # let dir = tempfile::tempdir()?;
    /// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
    /// let mut tx = heap.begin_write()?;
    /// tx.insert_as("xs", &[1.5f64, 2.5, 4.0][..])?;
    /// tx.commit()?;
    /// let rx = heap.begin_read()?;
    /// let xs: &[f64] = rx.get_as("xs")?.expect("present");
    /// assert_eq!(xs.iter().sum::<f64>(), 8.0);
    /// assert!(matches!(rx.get_as::<u32>("xs"), Err(pheap::Error::TypeMismatch { .. })));
    /// # Ok::<(), pheap::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Readable::get`]; [`Error::TypeMismatch`] if the value's length or alignment does
    /// not fit `T` (never a panic or a misaligned reference).
    fn get_as<T>(self, key: impl AsRef<[u8]>) -> Result<Option<&'a T>>
    where
        T: ?Sized + FromBytes + KnownLayout + Immutable,
    {
        let key = key.as_ref();
        match self.get(key)? {
            Some(bytes) => cast(key, bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Is `key` present (with a value of any kind)?
    ///
    /// # Errors
    ///
    /// As [`Readable::get_value`].
    fn contains_key(self, key: impl AsRef<[u8]>) -> Result<bool> {
        Ok(self.as_map()?.leaf(key.as_ref(), VERIFY_ON_READ_MAX)?.is_some())
    }

    /// The sub-map under `key`, if there is one.
    ///
    /// # Errors
    ///
    /// As [`Readable::as_map`]; [`Error::WrongKind`] if `key` holds a value that is not a map;
    /// [`Error::Corrupt`] if a record on the key's path is damaged.
    fn map(self, key: impl AsRef<[u8]>) -> Result<Option<Map<'a>>> {
        let (map, key) = (self.as_map()?, key.as_ref());
        let Some(l) = map.leaf(key, VERIFY_ON_READ_MAX)? else { return Ok(None) };
        match l.map_root() {
            Some(root) => Ok(Some(map.with_root(root))),
            None => {
                Err(Error::WrongKind { key: key.to_vec(), expected: Kind::Map, found: l.kind() })
            }
        }
    }

    /// The map at the end of `path` (a key per level; empty: this map), if every level is
    /// there.
    ///
    /// # Errors
    ///
    /// As [`Readable::map`], for the first level that fails.
    fn map_path<K: AsRef<[u8]>>(self, path: &[K]) -> Result<Option<Map<'a>>> {
        let mut map = self.as_map()?;
        for key in path {
            match map.map(key)? {
                Some(m) => map = m,
                None => return Ok(None),
            }
        }
        Ok(Some(map))
    }

    /// Number of entries (O(1)).
    ///
    /// # Errors
    ///
    /// As [`Readable::as_map`].
    fn len(self) -> Result<usize> {
        Ok(self.as_map()?.root().entries as usize)
    }

    /// Does the map hold no entry?
    ///
    /// # Errors
    ///
    /// As [`Readable::as_map`].
    fn is_empty(self) -> Result<bool> {
        Ok(self.as_map()?.root().entries == 0)
    }

    /// Bring this map's records into memory: its trie, its values and their parts, and its
    /// sub-maps' (level by level, each level asked for at once in file order: DESIGN §4.6a), so
    /// that the reads after it find them there. What a server calls for the part of a heap it
    /// serves after a reboot; [`crate::Heap::prefetch`] reads a whole heap at the disk's
    /// sequential speed. Returns the bytes asked for (0 for a heap in memory).
    ///
    /// # Errors
    ///
    /// As [`Readable::as_map`]; [`Error::Corrupt`] if a record of the map is damaged.
    fn prefetch(self) -> Result<u64> {
        let m = self.as_map()?;
        m.reader().prefetch_map(m.root())
    }

    /// Every entry, streamed in the map's order: the order of its keys' hashes (stable for a
    /// given heap file, unrelated to key order), the one order every iteration of pheap uses.
    /// Each item is checked as the walk reaches it: a damaged record ends the iteration with an
    /// [`Error::Corrupt`] item; a handle that cannot read gives its error as the one item.
    fn iter(self) -> Iter<'a> {
        Iter::over(self.as_map(), 0, None, None)
    }

    /// The entries after `pos` in the map's order: an iteration continued where one stopped
    /// ([`Iter::position`]), in this snapshot or a newer one. Entries added behind the position
    /// since are not seen; entries removed ahead of it are not returned.
    fn iter_after(self, pos: &IterPosition) -> Iter<'a> {
        Iter::over(self.as_map(), 0, None, Some(pos.0.clone()))
    }

    /// Partition `i` of `n`: the entries whose keys' hashes fall in the `i`-th of `n` equal
    /// ranges of the map's order. The `n` partitions are disjoint and together hold every
    /// entry, so `n` threads or processes can each scan one. Panics unless `i < n`.
    ///
    /// ```
    /// use pheap::prelude::*;
    /// # let dir = tempfile::tempdir()?;
    /// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
    /// # let mut tx = heap.begin_write()?;
    /// # for i in 0..100u32 { tx.insert(i.to_le_bytes(), b"v")?; }
    /// # tx.commit()?;
    /// let rx = heap.begin_read()?;
    /// let counts: Vec<usize> = (0..4).map(|i| rx.iter_partition(i, 4).count()).collect();
    /// assert_eq!(counts.iter().sum::<usize>(), 100);
    /// # Ok::<(), pheap::Error>(())
    /// ```
    fn iter_partition(self, i: usize, n: usize) -> Iter<'a> {
        let (lo, hi) = partition_range(i, n);
        Iter::over(self.as_map(), lo, hi, None)
    }
}

/// The order-key range of partition `i` of `n`: `lo..hi` (`hi` `None`: to the end).
pub(super) fn partition_range(i: usize, n: usize) -> (u64, Option<u64>) {
    assert!(n > 0 && i < n, "partition {i} of {n}");
    let at = |i: usize| ((i as u128) << 64) / n as u128;
    (at(i) as u64, (i + 1 < n).then(|| at(i + 1) as u64))
}

impl<'a> Readable<'a> for Map<'a> {
    fn as_map(self) -> Result<Map<'a>> {
        self.shared().check()?;
        Ok(self)
    }
}

impl<'a> Readable<'a> for &'a ReadTxn {
    fn as_map(self) -> Result<Map<'a>> {
        Map::new(self.shared(), self.reader(), self.snap.map).as_map()
    }
}

impl<'a> Readable<'a> for &'a WriteTxn {
    fn as_map(self) -> Result<Map<'a>> {
        self.map_at(&[])
    }
}

impl<'a> Readable<'a> for &'a MapMut<'_> {
    fn as_map(self) -> Result<Map<'a>> {
        self.tx().map_at(self.path())
    }
}

impl<'a> IntoIterator for Map<'a> {
    type Item = Result<(&'a [u8], Value<'a>)>;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &'a ReadTxn {
    type Item = Result<(&'a [u8], Value<'a>)>;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Iterator over the `(key, value)` pairs of a map in the map's order ([`Readable::iter`],
/// [`Readable::iter_after`], [`Readable::iter_partition`]); items are `Result`s because a
/// damaged file is detected as the walk goes. Its [`Iter::position`] can be saved and the
/// iteration continued later. The pairs borrow the transaction.
pub struct Iter<'a> {
    map: Option<Map<'a>>,
    cursor: Cursor,
    /// The handle refused the read (forked, poisoned): the only item.
    refused: Option<Error>,
}

impl fmt::Debug for Iter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").field("position", &self.position()).finish_non_exhaustive()
    }
}

impl<'a> Iter<'a> {
    /// The entries of `map` whose order keys lie in `lo..hi`, after `after`; or the refusal.
    fn over(map: Result<Map<'a>>, lo: u64, hi: Option<u64>, after: Option<Position>) -> Iter<'a> {
        match map {
            Ok(m) => {
                Iter { cursor: Cursor::new(m.root(), lo, hi, after), map: Some(m), refused: None }
            }
            Err(e) => Iter {
                map: None,
                cursor: Cursor::new(MapRoot::EMPTY, 0, None, None),
                refused: Some(e),
            },
        }
    }

    /// Where the iteration stands: after the last entry it returned (`None` before the first
    /// entry of a fresh iteration).
    pub fn position(&self) -> Option<IterPosition> {
        let map = self.map?;
        self.cursor.position(&map.reader()).map(IterPosition)
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = Result<(&'a [u8], Value<'a>)>;
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.refused.take() {
            return Some(Err(e));
        }
        let map = self.map?;
        let reader = map.reader();
        match self.cursor.next(&reader, &map.hasher()) {
            Ok(Some(l)) => Some(Value::of(reader, &l).map(|v| (l.key, v))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.refused.is_some() {
            return (1, Some(1));
        }
        match self.cursor.remaining() {
            Some(n) => (n as usize, Some(n as usize)),
            None => (0, None),
        }
    }
}
