//! Maps as the API shows them: [`Map`] (a read view of one map of a snapshot, or of a write
//! transaction's state), [`MapMut`] (a sub-map being changed), [`Value`] (a value with its kind
//! and parts), and their iterator.

use std::fmt;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::WriteTxn;
use crate::env::Shared;
use crate::error::{Error, Result};
use crate::format::*;
use crate::trie::{
    Iter as TrieIter, KeyHasher, LeafRef, MapRoot, NewValue, Reader, TrieWriter,
    VERIFY_ON_READ_MAX, ValueRef, order_key,
};

/// A value as stored: its [`Kind`], its inline part and its out-of-line parts, all borrowed from
/// the mapped file (no copy). Out-of-line parts start 64-byte aligned.
#[derive(Clone, Copy)]
pub struct Value<'a> {
    key: &'a [u8],
    v: ValueRef<'a>,
    reader: Reader<'a>,
}

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("kind", &self.v.kind)
            .field("inline_len", &self.v.inline.len())
            .field("parts", &self.v.parts.len())
            .finish()
    }
}

impl<'a> Value<'a> {
    pub(crate) fn of(reader: Reader<'a>, l: &LeafRef<'a>) -> Result<Value<'a>> {
        Ok(Value { key: l.key, v: reader.value(l)?, reader })
    }

    /// The value's kind.
    pub fn kind(&self) -> Kind {
        self.v.kind
    }

    /// The inline part (empty for a map).
    pub fn inline(&self) -> &'a [u8] {
        self.v.inline
    }

    /// Number of out-of-line parts.
    pub fn part_count(&self) -> usize {
        self.v.parts.len()
    }

    /// Out-of-line part `i` (64-byte aligned), checked against its checksum when at most
    /// 16 KiB long.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] if the part is damaged. Panics if `i >= part_count()`.
    pub fn part(&self, i: usize) -> Result<&'a [u8]> {
        self.reader.part(&self.v.parts[i], VERIFY_ON_READ_MAX)
    }

    /// Every out-of-line part, in order.
    pub fn parts(&self) -> impl Iterator<Item = Result<&'a [u8]>> + 'a {
        let reader = self.reader;
        self.v.parts.iter().map(move |p| reader.part(p, VERIFY_ON_READ_MAX))
    }

    /// The number of entries of a sub-map; `None` for other kinds.
    pub fn map_len(&self) -> Option<usize> {
        self.v.map.map(|m| m.entries as usize)
    }

    /// The value as one byte string: the inline part when it has no out-of-line part, or its one
    /// out-of-line part when the inline part is empty (how values of 4 KiB or more are stored).
    ///
    /// # Errors
    ///
    /// [`Error::WrongKind`] for a map, [`Error::MultiPart`] for other shapes, [`Error::Corrupt`]
    /// if the part is damaged.
    pub fn bytes(&self) -> Result<&'a [u8]> {
        self.bytes_verified(VERIFY_ON_READ_MAX)
    }

    fn bytes_verified(&self, verify: usize) -> Result<&'a [u8]> {
        match whole(self.key, self.v.kind, self.v.inline.is_empty(), self.v.parts)? {
            None => Ok(self.v.inline),
            Some(p) => self.reader.part(p, verify),
        }
    }

    /// The value's bytes as a `T` (see [`Map::get_as`]).
    ///
    /// # Errors
    ///
    /// As [`Value::bytes`]; [`Error::TypeMismatch`] if the bytes do not fit `T`.
    pub fn as_type<T>(&self) -> Result<&'a T>
    where
        T: ?Sized + FromBytes + KnownLayout + Immutable,
    {
        cast(self.key, self.bytes()?)
    }
}

/// Which part is a value as one byte string (DESIGN §2.8): `None` for the inline part (no
/// out-of-line part), the one out-of-line part when the inline part is empty.
///
/// # Errors
///
/// [`Error::WrongKind`] for a map, [`Error::MultiPart`] for any other shape.
pub(super) fn whole<'p, P>(
    key: &[u8],
    kind: Kind,
    inline_empty: bool,
    parts: &'p [P],
) -> Result<Option<&'p P>> {
    if kind == Kind::Map {
        return Err(Error::WrongKind { key: key.to_vec(), expected: Kind::Bytes, found: kind });
    }
    match parts {
        [] => Ok(None),
        [p] if inline_empty => Ok(Some(p)),
        parts => Err(Error::MultiPart { key: key.to_vec(), parts: parts.len() }),
    }
}

fn cast<'a, T>(key: &[u8], bytes: &'a [u8]) -> Result<&'a T>
where
    T: ?Sized + FromBytes + KnownLayout + Immutable,
{
    use zerocopy::CastError;
    T::ref_from_bytes(bytes).map_err(|e| {
        let reason = match e {
            CastError::Alignment(_) => "the value is not aligned for the type",
            CastError::Size(_) => "the value's length is not a size of the type",
            CastError::Validity(_) => "the value is not valid for the type",
        };
        Error::TypeMismatch {
            key: key.to_vec(),
            type_name: std::any::type_name::<T>(),
            len: bytes.len(),
            reason,
        }
    })
}

/// A read view of one map: the top level of a snapshot ([`crate::ReadTxn::root`]), a sub-map
/// ([`Map::map`]), or a write transaction's map as it has changed it. Everything it returns
/// borrows the transaction. `Copy`.
#[derive(Clone, Copy)]
pub struct Map<'a> {
    reader: Reader<'a>,
    hasher: KeyHasher,
    root: MapRoot,
    /// The handle's state: every read checks it first (a forked child's inherited handle, or a
    /// poisoned one, reads nothing: DESIGN §5.7).
    shared: &'a Shared,
}

impl fmt::Debug for Map<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map").field("len", &self.root.entries).finish()
    }
}

impl<'a> Map<'a> {
    pub(crate) fn new(shared: &'a Shared, reader: Reader<'a>, root: MapRoot) -> Map<'a> {
        Map { reader, hasher: shared.hasher, root, shared }
    }

    pub(crate) fn reader(&self) -> Reader<'a> {
        self.reader
    }

    pub(crate) fn hasher(&self) -> KeyHasher {
        self.hasher
    }

    pub(crate) fn root(&self) -> MapRoot {
        self.root
    }

    fn leaf(&self, key: &[u8], verify: usize) -> Result<Option<LeafRef<'a>>> {
        self.shared.check()?;
        self.reader.get(self.root.root, self.hasher.hash(key), key, verify)
    }

    /// The value of `key`, borrowed from the mapped file. A value of up to 16 KiB is checked
    /// against its record's checksum first (DESIGN §2.6): damage is [`Error::Corrupt`], never
    /// wrong bytes. Longer values are not hashed on every read; [`Map::get_verified`] does.
    ///
    /// # Errors
    ///
    /// [`Error::WrongKind`] if `key` holds a map, [`Error::MultiPart`] if it holds a value of
    /// several parts ([`Map::get_value`] reads those), [`Error::Corrupt`] if a record on the
    /// key's path is damaged.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<&'a [u8]>> {
        self.get_checked(key.as_ref(), VERIFY_ON_READ_MAX)
    }

    /// As [`Map::get`], with the checksums checked whatever the value's length (one pass over
    /// it).
    ///
    /// # Errors
    ///
    /// As [`Map::get`].
    pub fn get_verified(&self, key: impl AsRef<[u8]>) -> Result<Option<&'a [u8]>> {
        self.get_checked(key.as_ref(), usize::MAX)
    }

    fn get_checked(&self, key: &[u8], verify: usize) -> Result<Option<&'a [u8]>> {
        let Some(l) = self.leaf(key, verify)? else { return Ok(None) };
        // The common case, plain inline bytes, needs no decoding.
        if l.kind == LEAF_KIND_BYTES && l.flags == 0 {
            return Ok(Some(l.value));
        }
        Value::of(self.reader, &l)?.bytes_verified(verify).map(Some)
    }

    /// The value of `key` whatever its kind and shape.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] if a record on the key's path is damaged.
    pub fn get_value(&self, key: impl AsRef<[u8]>) -> Result<Option<Value<'a>>> {
        match self.leaf(key.as_ref(), VERIFY_ON_READ_MAX)? {
            Some(l) => Value::of(self.reader, &l).map(Some),
            None => Ok(None),
        }
    }

    /// The value of `key` viewed in place as a `T`: a `#[repr(C)]` record or a slice such as
    /// `[f64]`, with no copy. Inline values are 8-byte aligned, values of 4 KiB or more 64-byte
    /// aligned.
    ///
    /// ```
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
    /// As [`Map::get`]; [`Error::TypeMismatch`] if the value's length or alignment does not fit
    /// `T` (never a panic or a misaligned reference).
    pub fn get_as<T>(&self, key: impl AsRef<[u8]>) -> Result<Option<&'a T>>
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
    /// [`Error::Corrupt`] if a record on the key's path is damaged.
    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        Ok(self.leaf(key.as_ref(), VERIFY_ON_READ_MAX)?.is_some())
    }

    /// The sub-map under `key`, if there is one.
    ///
    /// # Errors
    ///
    /// [`Error::WrongKind`] if `key` holds bytes; [`Error::Corrupt`] if a record on the key's
    /// path is damaged.
    pub fn map(&self, key: impl AsRef<[u8]>) -> Result<Option<Map<'a>>> {
        let key = key.as_ref();
        let Some(l) = self.leaf(key, VERIFY_ON_READ_MAX)? else { return Ok(None) };
        match l.map_root() {
            Some(root) => Ok(Some(Map { root, ..*self })),
            None => {
                Err(Error::WrongKind { key: key.to_vec(), expected: Kind::Map, found: l.kind() })
            }
        }
    }

    /// The map at the end of `path` (a key per level), if every level is there.
    ///
    /// # Errors
    ///
    /// As [`Map::map`], for the first level that fails.
    pub fn map_path<K: AsRef<[u8]>>(&self, path: &[K]) -> Result<Option<Map<'a>>> {
        let mut map = *self;
        for key in path {
            match map.map(key)? {
                Some(m) => map = m,
                None => return Ok(None),
            }
        }
        Ok(Some(map))
    }

    /// Number of entries (O(1)).
    pub fn len(&self) -> usize {
        self.root.entries as usize
    }

    /// Does the map hold no entry?
    pub fn is_empty(&self) -> bool {
        self.root.entries == 0
    }

    /// Every entry, in hash order (stable for a given heap file, unrelated to key order). Each
    /// item is checked as the walk reaches it: a damaged record ends the iteration with an
    /// [`Error::Corrupt`] item.
    pub fn iter(&self) -> Iter<'a> {
        let walk = TrieIter::new(self.reader, self.hasher, self.root);
        match self.shared.check() {
            Ok(()) => Iter { walk, refused: None },
            // The one item: the error (a forked child's inherited snapshot reads nothing).
            Err(e) => Iter {
                walk: TrieIter::new(self.reader, self.hasher, MapRoot::EMPTY),
                refused: Some(e),
            },
        }
    }
}

impl<'a> IntoIterator for Map<'a> {
    type Item = Result<(&'a [u8], Value<'a>)>;
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Iterator over the `(key, value)` pairs of a map ([`Map::iter`], [`crate::ReadTxn::iter`]);
/// items are `Result`s because a damaged file is detected as the walk goes. Its length is the
/// map's entry count (exact for an intact file). The pairs borrow the transaction.
#[derive(Debug)]
pub struct Iter<'a> {
    walk: TrieIter<'a>,
    /// The handle refused the read (forked, poisoned): the only item.
    refused: Option<Error>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = Result<(&'a [u8], Value<'a>)>;
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.refused.take() {
            return Some(Err(e));
        }
        let reader = self.walk.reader();
        let item = self.walk.next()?;
        Some(item.and_then(|l| Ok((l.key, Value::of(reader, &l)?))))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.walk.remaining() as usize + usize::from(self.refused.is_some());
        (n, Some(n))
    }
}

impl ExactSizeIterator for Iter<'_> {}

/// A sub-map of a write transaction, being changed ([`WriteTxn::map_mut`], [`MapMut::map_mut`]).
/// Its changes are part of the transaction: visible to it at once, to others at its commit.
pub struct MapMut<'t> {
    tx: &'t mut WriteTxn,
    path: Vec<Vec<u8>>,
}

impl fmt::Debug for MapMut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapMut").field("depth", &self.path.len()).finish()
    }
}

/// The mutations a map supports, for [`WriteTxn`] (its top-level map) and [`MapMut`] alike.
impl<'t> MapMut<'t> {
    pub(super) fn new(tx: &'t mut WriteTxn, path: Vec<Vec<u8>>) -> MapMut<'t> {
        MapMut { tx, path }
    }

    /// A read view of this map as the transaction sees it now.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] if a record on the path to the map is damaged.
    pub fn as_map(&self) -> Result<Map<'_>> {
        self.tx.map_at(&self.path)
    }

    /// As [`Map::get`], in this map as the transaction sees it.
    ///
    /// # Errors
    ///
    /// As [`Map::get`].
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<&[u8]>> {
        self.as_map()?.get(key)
    }

    /// As [`Map::get_value`].
    ///
    /// # Errors
    ///
    /// As [`Map::get_value`].
    pub fn get_value(&self, key: impl AsRef<[u8]>) -> Result<Option<Value<'_>>> {
        self.as_map()?.get_value(key)
    }

    /// As [`Map::contains_key`].
    ///
    /// # Errors
    ///
    /// As [`Map::contains_key`].
    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.as_map()?.contains_key(key)
    }

    /// Number of entries.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] if a record on the path to the map is damaged.
    pub fn len(&self) -> Result<usize> {
        Ok(self.as_map()?.len())
    }

    /// Does the map hold no entry?
    ///
    /// # Errors
    ///
    /// As [`MapMut::len`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.as_map()?.is_empty())
    }

    /// Insert or replace `key` -> `value` (plain bytes); returns whether it replaced a value.
    /// Values of 4 KiB or more are stored out of line, 64-byte aligned.
    ///
    /// # Errors
    ///
    /// [`Error::WrongKind`] if `key` holds a map (remove it first), [`Error::KeyTooLarge`],
    /// [`Error::ValueTooLarge`]: the transaction stays usable. [`Error::Corrupt`] or
    /// [`Error::Io`] fail the transaction.
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<bool> {
        self.insert_parts(key, Kind::Bytes, value.as_ref(), &[])
    }

    /// Insert or replace `key` with a value of `kind` ([`Kind::Bytes`] or [`Kind::Tagged`]) made
    /// of an inline part and out-of-line parts (each 64-byte aligned, each readable in place).
    ///
    /// # Errors
    ///
    /// As [`MapMut::insert`]; [`Error::WrongKind`] for [`Kind::Map`] (use
    /// [`MapMut::map_mut`]); [`Error::ValueTooLarge`] for more than 65,536 parts.
    pub fn insert_parts(
        &mut self,
        key: impl AsRef<[u8]>,
        kind: Kind,
        inline: &[u8],
        parts: &[&[u8]],
    ) -> Result<bool> {
        let key = key.as_ref();
        if kind == Kind::Map {
            return Err(Error::WrongKind { key: key.to_vec(), expected: Kind::Bytes, found: kind });
        }
        self.tx.in_map(&self.path, |w, map| {
            // A long single value goes out of line, so that it starts aligned.
            let (inline, refs) = if parts.is_empty() && inline.len() >= OUT_OF_LINE_MIN {
                (&[][..], w.write_parts(&[inline])?)
            } else {
                (inline, w.write_parts(parts)?)
            };
            let v = if refs.is_empty() {
                NewValue::Inline { kind, bytes: inline }
            } else {
                NewValue::Parts { kind, inline, parts: &refs }
            };
            w.insert(map, key, &v)
        })
    }

    /// Insert or replace `key` with a value of `len` bytes that `fill` writes straight into its
    /// place in the heap (no intermediate copy, whatever the size). What the buffer holds when
    /// `fill` gets it is unspecified: `fill` should write every byte.
    ///
    /// # Errors
    ///
    /// As [`MapMut::insert`].
    pub fn insert_with(
        &mut self,
        key: impl AsRef<[u8]>,
        len: usize,
        mut fill: impl FnMut(&mut [u8]),
    ) -> Result<bool> {
        if len < OUT_OF_LINE_MIN {
            let mut buf = vec![0u8; len];
            fill(&mut buf);
            return self.insert(key, buf);
        }
        let key = key.as_ref();
        self.tx.in_map(&self.path, |w, map| {
            let part = w.write_part_with(len as u64, &mut fill)?;
            let parts = [part];
            w.insert(map, key, &NewValue::Parts { kind: Kind::Bytes, inline: &[], parts: &parts })
        })
    }

    /// Insert or replace `key` with the bytes of `value` (a `#[repr(C)]` record, a slice of
    /// numbers...), to be read back in place with [`Map::get_as`].
    ///
    /// # Errors
    ///
    /// As [`MapMut::insert`].
    pub fn insert_as<T>(&mut self, key: impl AsRef<[u8]>, value: &T) -> Result<bool>
    where
        T: ?Sized + IntoBytes + Immutable,
    {
        self.insert(key, value.as_bytes())
    }

    /// Remove `key` and its value (a sub-map with everything in it); returns whether it was
    /// present.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] or [`Error::Io`] fail the transaction.
    pub fn remove(&mut self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key.as_ref();
        self.tx.in_map(&self.path, |w, map| w.remove(map, key))
    }

    /// Remove every entry (freeing sub-maps and parts).
    ///
    /// # Errors
    ///
    /// As [`MapMut::remove`].
    pub fn clear(&mut self) -> Result<()> {
        self.tx.in_map(&self.path, |w, map| {
            w.free_map(map)?;
            Ok((MapRoot::EMPTY, ()))
        })
    }

    /// Keep only the entries for which `keep` returns true.
    ///
    /// # Errors
    ///
    /// As [`MapMut::remove`]; an error of the walk.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], Value<'_>) -> bool) -> Result<()> {
        let mut gone = Vec::new();
        for item in self.as_map()?.iter() {
            let (k, v) = item?;
            if !keep(k, v) {
                gone.push(k.to_vec());
            }
        }
        for k in gone {
            self.remove(k)?;
        }
        Ok(())
    }

    /// Insert every pair of `entries` (plain bytes; a key given twice keeps its last value).
    /// The batch is sorted by key hash first; into an empty map the trie is then built bottom-up
    /// (each node written once, leaves in order), into a non-empty one inserted in the trie's
    /// order (consecutive inserts share their path and rewrite it in place).
    ///
    /// # Errors
    ///
    /// [`Error::KeyTooLarge`] or [`Error::ValueTooLarge`] before anything is written; otherwise
    /// as [`MapMut::insert`] (an error of the bulk build fails the transaction).
    pub fn insert_many<K, V>(&mut self, entries: impl IntoIterator<Item = (K, V)>) -> Result<()>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let hasher = self.tx.shared.hasher;
        let mut batch: Vec<(u64, u64, usize, K, V)> = Vec::new();
        for (i, (k, v)) in entries.into_iter().enumerate() {
            let (kl, vl) = (k.as_ref().len(), v.as_ref().len());
            if kl > MAX_KEY_LEN {
                return Err(Error::KeyTooLarge { len: kl, max: MAX_KEY_LEN });
            }
            if vl > MAX_VALUE_LEN {
                return Err(Error::ValueTooLarge { len: vl, max: MAX_VALUE_LEN });
            }
            let h = hasher.hash(k.as_ref());
            batch.push((order_key(h), h, i, k, v));
        }
        // Trie order; equal keys together, the last given last.
        batch.sort_unstable_by(|a, b| (a.0, a.3.as_ref(), a.2).cmp(&(b.0, b.3.as_ref(), b.2)));
        let last = |i: usize, batch: &[(u64, u64, usize, K, V)]| {
            batch
                .get(i + 1)
                .is_none_or(|n| n.0 != batch[i].0 || n.3.as_ref() != batch[i].3.as_ref())
        };
        if self.is_empty()? {
            return self.tx.in_map(&self.path, |w, map| {
                debug_assert!(map.is_empty());
                let mut leaves = Vec::with_capacity(batch.len());
                for i in 0..batch.len() {
                    if !last(i, &batch) {
                        continue;
                    }
                    let (_, h, _, k, v) = &batch[i];
                    let (k, v) = (k.as_ref(), v.as_ref());
                    let off = if v.len() >= OUT_OF_LINE_MIN {
                        let parts = w.write_parts(&[v])?;
                        w.write_leaf(
                            k,
                            &NewValue::Parts { kind: Kind::Bytes, inline: &[], parts: &parts },
                        )?
                    } else {
                        w.write_leaf(k, &NewValue::Inline { kind: Kind::Bytes, bytes: v })?
                    };
                    leaves.push((*h, off));
                }
                Ok((w.build(&leaves)?, ()))
            });
        }
        for i in 0..batch.len() {
            if last(i, &batch) {
                self.insert(batch[i].3.as_ref(), batch[i].4.as_ref())?;
            }
        }
        Ok(())
    }

    /// The sub-map under `key`, created empty if `key` is absent.
    ///
    /// # Errors
    ///
    /// [`Error::WrongKind`] if `key` holds bytes (nothing is overwritten);
    /// [`Error::NestingTooDeep`] below [`crate::MAX_NESTING`] levels; as [`MapMut::insert`].
    pub fn map_mut(&mut self, key: impl AsRef<[u8]>) -> Result<MapMut<'_>> {
        let key = key.as_ref();
        if self.path.len() >= MAX_NESTING {
            return Err(Error::NestingTooDeep { max: MAX_NESTING });
        }
        self.tx.create_map(&self.path, key)?;
        let mut path = self.path.clone();
        path.push(key.to_vec());
        Ok(MapMut { tx: &mut *self.tx, path })
    }
}

impl WriteTxn {
    /// The map at `path` (keys from the top level) as this transaction sees it; an absent map
    /// reads as empty.
    pub(super) fn map_at(&self, path: &[Vec<u8>]) -> Result<Map<'_>> {
        self.usable()?;
        let mut map = Map::new(&self.shared, self.reader(), self.map);
        for key in path {
            map = map.map(key)?.unwrap_or(Map { root: MapRoot::EMPTY, ..map });
        }
        Ok(map)
    }

    /// Ensure the map at `path` holds a sub-map under `key`.
    pub(super) fn create_map(&mut self, path: &[Vec<u8>], key: &[u8]) -> Result<()> {
        self.in_map(path, |w, map| {
            let hash = w.hasher.hash(key);
            match w.reader().get(map.root, hash, key, VERIFY_ON_READ_MAX)? {
                Some(l) if l.map_root().is_some() => Ok((map, ())),
                Some(l) => Err(Error::WrongKind {
                    key: key.to_vec(),
                    expected: Kind::Map,
                    found: l.kind(),
                }),
                None => Ok((w.insert(map, key, &NewValue::Map(MapRoot::EMPTY))?.0, ())),
            }
        })
    }

    /// Apply `f` to the map at `path` (an absent map is empty, and created if `f` changes it),
    /// then write the changed roots back up the path (DESIGN §2.6.2): a map leaf this transaction
    /// wrote is rewritten in place, which ends the walk up; any other is replaced, path-copying
    /// its parent map. Errors that change nothing leave the transaction usable; others fail it.
    pub(super) fn in_map<R>(
        &mut self,
        path: &[Vec<u8>],
        f: impl FnOnce(&mut TrieWriter<'_>, MapRoot) -> Result<(MapRoot, R)>,
    ) -> Result<R> {
        self.usable()?;
        let (hasher, top) = (self.shared.hasher, self.map);
        let mut w = TrieWriter { alloc: self.alloc(), hasher };
        let res = (|| {
            let mut levels = Vec::with_capacity(path.len());
            let mut cur = top;
            for key in path {
                let leaf = w.reader().get(cur.root, hasher.hash(key), key, VERIFY_ON_READ_MAX)?;
                let (off, sub) = match leaf {
                    None => (None, MapRoot::EMPTY),
                    Some(l) => match l.map_root() {
                        Some(m) => (Some(l.off), m),
                        None => {
                            let found = l.kind();
                            return Err(Error::WrongKind {
                                key: key.clone(),
                                expected: Kind::Map,
                                found,
                            });
                        }
                    },
                };
                levels.push((cur, off));
                cur = sub;
            }
            let (mut new, out) = f(&mut w, cur)?;
            if new == cur {
                return Ok((top, out));
            }
            for (key, (parent, off)) in path.iter().zip(levels).rev() {
                if let Some(off) = off
                    && w.alloc.is_fresh(off)
                {
                    w.update_map_leaf(off, key, new)?;
                    return Ok((top, out));
                }
                new = w.insert(parent, key, &NewValue::Map(new))?.0;
            }
            Ok((new, out))
        })();
        match res {
            Ok((map, out)) => {
                self.map = map;
                Ok(out)
            }
            Err(
                e @ (Error::KeyTooLarge { .. }
                | Error::ValueTooLarge { .. }
                | Error::WrongKind { .. }),
            ) => Err(e),
            Err(e) => self.fail(e),
        }
    }
}
