//! Maps as the API shows them: [`Map`] (a read view of one map of a snapshot, or of a write
//! transaction's state), [`MapMut`] (a sub-map being changed), [`Value`] (a value with its kind
//! and parts).

use std::fmt;

use zerocopy::{FromBytes, Immutable, KnownLayout};

#[cfg(doc)]
use super::Writable;
use super::{Readable, WriteTxn};
use crate::error::{Error, Result};
use crate::format::*;
use crate::shared::Shared;
use crate::trie::{
    KeyHasher, LeafRef, MapRoot, NewValue, Reader, TrieWriter, VERIFY_ON_READ_MAX, ValueRef,
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

    /// The key the value was read under.
    pub(super) fn key(&self) -> &'a [u8] {
        self.key
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
    /// 16 KiB long; `None` if `i >= part_count()`.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] if the part is damaged.
    pub fn part(&self, i: usize) -> Result<Option<&'a [u8]>> {
        self.v.parts.get(i).map(|p| self.reader.part(p, VERIFY_ON_READ_MAX)).transpose()
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

    /// The value's bytes viewed in place as a `T` ([`Readable::get_as`] of the value of a
    /// key: the same cast).
    ///
    /// # Errors
    ///
    /// As [`Value::bytes`]; [`Error::TypeMismatch`] if the bytes do not fit `T`.
    pub fn get_as<T>(&self) -> Result<&'a T>
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

pub(super) fn cast<'a, T>(key: &[u8], bytes: &'a [u8]) -> Result<&'a T>
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

/// A read view of one map: the top level of a snapshot or a write transaction
/// ([`Readable::as_map`]), or a sub-map ([`Readable::map`]); its reads are [`Readable`]'s.
/// Everything it returns borrows the transaction. `Copy`.
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

    /// The same handle's map at `root`.
    pub(super) fn with_root(&self, root: MapRoot) -> Map<'a> {
        Map { root, ..*self }
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

    pub(super) fn shared(&self) -> &'a Shared {
        self.shared
    }

    /// The leaf of `key` (the handle checked by [`Readable::as_map`]).
    pub(super) fn leaf(&self, key: &[u8], verify: usize) -> Result<Option<LeafRef<'a>>> {
        self.reader.get(self.root.root, self.hasher.hash(key), key, verify)
    }

    /// The value of `key` as one byte string, checked when at most `verify` bytes long.
    pub(super) fn bytes_of(&self, key: &[u8], verify: usize) -> Result<Option<&'a [u8]>> {
        let Some(l) = self.leaf(key, verify)? else { return Ok(None) };
        // The common case, plain inline bytes, needs no decoding.
        if l.kind == LEAF_KIND_BYTES && l.flags == 0 {
            return Ok(Some(l.value));
        }
        Value::of(self.reader, &l)?.bytes_verified(verify).map(Some)
    }
}

/// A sub-map of a write transaction, being changed ([`Writable::map_mut`]). Its changes are
/// part of the transaction: visible to it at once, to others at its commit. Its reads are
/// [`Readable`]'s (on `&MapMut`), its changes [`Writable`]'s.
pub struct MapMut<'t> {
    tx: &'t mut WriteTxn,
    path: Vec<Vec<u8>>,
}

impl fmt::Debug for MapMut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapMut").field("depth", &self.path.len()).finish()
    }
}

impl<'t> MapMut<'t> {
    pub(super) fn new(tx: &'t mut WriteTxn, path: Vec<Vec<u8>>) -> MapMut<'t> {
        MapMut { tx, path }
    }

    pub(super) fn tx(&self) -> &WriteTxn {
        self.tx
    }

    pub(super) fn path(&self) -> &[Vec<u8>] {
        &self.path
    }

    /// The transaction and this map's path, to change it.
    pub(super) fn parts_mut(&mut self) -> (&mut WriteTxn, &[Vec<u8>]) {
        (self.tx, &self.path)
    }
}

impl WriteTxn {
    /// The map at `path` (keys from the top level) as this transaction sees it; an absent map
    /// reads as empty.
    pub(super) fn map_at(&self, path: &[Vec<u8>]) -> Result<Map<'_>> {
        self.usable()?;
        let mut map = Map::new(&self.shared, self.reader(), self.map).as_map()?;
        for key in path {
            map = map.map(key)?.unwrap_or(map.with_root(MapRoot::EMPTY));
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
