//! Ordered and resumable iteration, shards by hash prefix, and handles that own their snapshot
//! (for bindings and threads): [`SharedRead`], [`OwnedBytes`], [`OwnedIter`].

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use super::map::{Map, Value, whole};
use super::read::ReadTxn;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::format::*;
use crate::trie::{Cursor, MapRoot, Position, VERIFY_ON_READ_MAX};

/// Where an ordered iteration stands: after the last entry it returned. Save it
/// ([`IterPosition::to_bytes`]) and continue later, in this snapshot or a newer one, in this
/// process or another ([`Map::iter_after`], [`SharedRead::iter_owned_after`]): the iteration
/// goes on with the entries that come after it in the map's order (entries added behind it since
/// are not seen, entries removed ahead of it are not returned).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IterPosition(Position);

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

/// The order-key range of shard `i` of `n`: `lo..hi` (`hi` `None`: to the end).
fn shard_range(i: usize, n: usize) -> (u64, Option<u64>) {
    assert!(n > 0 && i < n, "shard {i} of {n}");
    let at = |i: usize| ((i as u128) << 64) / n as u128;
    (at(i) as u64, (i + 1 < n).then(|| at(i + 1) as u64))
}

/// An iteration in the map's order (hash order), by a cursor that can be resumed: a shard
/// ([`Map::iter_shard`]) or the rest of the map after a position ([`Map::iter_after`]).
pub struct OrderedIter<'a> {
    map: Map<'a>,
    cursor: Cursor,
}

impl fmt::Debug for OrderedIter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrderedIter").finish_non_exhaustive()
    }
}

impl OrderedIter<'_> {
    /// Where the iteration stands (`None` before the first entry of a fresh one).
    pub fn position(&self) -> Option<IterPosition> {
        self.cursor.position().cloned().map(IterPosition)
    }
}

impl<'a> Iterator for OrderedIter<'a> {
    type Item = Result<(&'a [u8], Value<'a>)>;
    fn next(&mut self) -> Option<Self::Item> {
        let (reader, hasher) = (self.map.reader(), self.map.hasher());
        match self.cursor.next(&reader, &hasher) {
            Ok(Some(l)) => Some(Value::of(reader, &l).map(|v| (l.key, v))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

impl<'a> Map<'a> {
    /// Shard `i` of `n`: the entries whose keys' hashes fall in the `i`-th of `n` equal ranges of
    /// the map's order. The `n` shards are disjoint and together hold every entry, so `n`
    /// threads or processes can each scan one. Panics unless `i < n`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
    /// # let mut tx = heap.begin_write()?;
    /// # for i in 0..100u32 { tx.insert(i.to_le_bytes(), b"v")?; }
    /// # tx.commit()?;
    /// let rx = heap.begin_read()?;
    /// let counts: Vec<usize> = (0..4).map(|i| rx.root().iter_shard(i, 4).count()).collect();
    /// assert_eq!(counts.iter().sum::<usize>(), 100);
    /// # Ok::<(), pheap::Error>(())
    /// ```
    pub fn iter_shard(&self, i: usize, n: usize) -> OrderedIter<'a> {
        let (lo, hi) = shard_range(i, n);
        OrderedIter { map: *self, cursor: Cursor::new(self.root(), lo, hi, None) }
    }

    /// The entries after `pos` in the map's order ([`Map::iter_ordered`] from where an
    /// iteration stopped).
    pub fn iter_after(&self, pos: &IterPosition) -> OrderedIter<'a> {
        OrderedIter { map: *self, cursor: Cursor::new(self.root(), 0, None, Some(pos.0.clone())) }
    }

    /// Every entry in the map's order, by a cursor whose [`OrderedIter::position`] can be saved.
    pub fn iter_ordered(&self) -> OrderedIter<'a> {
        OrderedIter { map: *self, cursor: Cursor::new(self.root(), 0, None, None) }
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
    /// The map at the end of `path` (empty: the top level).
    fn map_in<K: AsRef<[u8]>>(&self, path: &[K]) -> Result<Option<Map<'_>>> {
        self.0.shared().check()?;
        self.0.root().map_path(path)
    }

    /// The value of `key` in the map at `path` (empty: the top level) as one byte string
    /// ([`Map::get`]), in a handle that owns the snapshot: it can outlive this `SharedRead`,
    /// cross threads, and be held by a binding.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
    /// # let mut tx = heap.begin_write()?;
    /// # tx.insert("k", "v")?;
    /// # tx.commit()?;
    /// let v = heap.begin_read_shared()?.get_owned::<&str>(&[], "k")?.expect("present");
    /// let t = std::thread::spawn(move || v.to_vec()); // the snapshot travels with it
    /// assert_eq!(t.join().unwrap(), b"v");
    /// # Ok::<(), pheap::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Map::get`] and [`Map::map`].
    pub fn get_owned<K: AsRef<[u8]>>(
        &self,
        path: &[K],
        key: impl AsRef<[u8]>,
    ) -> Result<Option<OwnedBytes>> {
        let Some(map) = self.map_in(path)? else { return Ok(None) };
        map.get(key)?.map(|b| self.own(b)).transpose()
    }

    /// The value of `key` in the map at `path` (empty: the top level), kind and parts, in a
    /// handle that owns the snapshot ([`SharedRead::get_owned`] for any value's shape).
    ///
    /// # Errors
    ///
    /// As [`Map::get_value`] and [`Map::map`].
    pub fn get_value_owned<K: AsRef<[u8]>>(
        &self,
        path: &[K],
        key: impl AsRef<[u8]>,
    ) -> Result<Option<OwnedValue>> {
        let Some(map) = self.map_in(path)? else { return Ok(None) };
        map.get_value(key)?.map(|v| self.own_value(&v)).transpose()
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

    /// Every entry of the map at `path` (empty: the top level), in the map's order, by an
    /// iterator that owns the snapshot; its position can be saved and resumed.
    ///
    /// # Errors
    ///
    /// As [`Map::map`]; [`Error::WrongKind`] if a level holds bytes.
    pub fn iter_owned<K: AsRef<[u8]>>(&self, path: &[K]) -> Result<OwnedIter> {
        self.owned(path, 0, None, None)
    }

    /// As [`SharedRead::iter_owned`], continuing after `pos`.
    ///
    /// # Errors
    ///
    /// As [`SharedRead::iter_owned`].
    pub fn iter_owned_after<K: AsRef<[u8]>>(
        &self,
        path: &[K],
        pos: &IterPosition,
    ) -> Result<OwnedIter> {
        self.owned(path, 0, None, Some(pos.0.clone()))
    }

    /// Shard `i` of `n` of the map at `path` ([`Map::iter_shard`]), owning the snapshot.
    ///
    /// # Errors
    ///
    /// As [`SharedRead::iter_owned`].
    pub fn shard_owned<K: AsRef<[u8]>>(&self, path: &[K], i: usize, n: usize) -> Result<OwnedIter> {
        let (lo, hi) = shard_range(i, n);
        self.owned(path, lo, hi, None)
    }

    fn owned<K: AsRef<[u8]>>(
        &self,
        path: &[K],
        lo: u64,
        hi: Option<u64>,
        after: Option<Position>,
    ) -> Result<OwnedIter> {
        let root = self.map_in(path)?.map_or(MapRoot::EMPTY, |m| m.root());
        Ok(OwnedIter { rx: self.clone(), cursor: Cursor::new(root, lo, hi, after) })
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

/// A value owning its snapshot: its kind, inline part and out-of-line parts as
/// [`OwnedBytes`] (parts checked as [`Value::part`] checks them).
#[derive(Clone, Debug)]
pub struct OwnedValue {
    /// The value's kind.
    pub kind: Kind,
    /// The inline part (empty for a map).
    pub inline: OwnedBytes,
    /// The out-of-line parts.
    pub parts: Vec<OwnedBytes>,
    /// A sub-map's entry count.
    pub map_len: Option<usize>,
}

impl OwnedValue {
    /// The value as one byte string, as [`Value::bytes`] gives it.
    ///
    /// # Errors
    ///
    /// As [`Value::bytes`].
    pub fn bytes(&self, key: &[u8]) -> Result<&OwnedBytes> {
        Ok(whole(key, self.kind, self.inline.is_empty(), &self.parts)?.unwrap_or(&self.inline))
    }
}

/// An iterator owning its snapshot, over one map in the map's order; resumable
/// ([`OwnedIter::position`], [`SharedRead::iter_owned_after`]). `Send + Sync + 'static`.
#[derive(Debug)]
pub struct OwnedIter {
    rx: SharedRead,
    cursor: Cursor,
}

impl OwnedIter {
    /// Where the iteration stands.
    pub fn position(&self) -> Option<IterPosition> {
        self.cursor.position().cloned().map(IterPosition)
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
        let item = (|| {
            let v = reader.value(&l)?;
            let parts = v
                .parts
                .iter()
                .map(|p| self.rx.own(reader.part(p, VERIFY_ON_READ_MAX)?))
                .collect::<Result<Vec<_>>>()?;
            let value = OwnedValue {
                kind: v.kind,
                inline: self.rx.own(v.inline)?,
                parts,
                map_len: v.map.map(|m| m.entries as usize),
            };
            Ok((self.rx.own(l.key)?, value))
        })();
        Some(item)
    }
}
