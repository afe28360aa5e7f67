//! The changes a map supports, written once: [`Writable`] serves a write transaction (its
//! top-level map) and a sub-map being changed ([`MapMut`]).

use zerocopy::{Immutable, IntoBytes};

use super::WriteTxn;
use super::map::{MapMut, Value};
use super::readable::Readable;
use crate::error::{Error, Result};
use crate::format::*;
use crate::storage::prefetch_memory;
use crate::trie::{MapRoot, NewValue, order_key};

mod sealed {
    /// The transaction and the path (a key per level) of the map the changes go to.
    pub trait Target {
        fn target(&mut self) -> (&mut super::WriteTxn, &[Vec<u8>]);
    }
}

impl sealed::Target for WriteTxn {
    fn target(&mut self) -> (&mut WriteTxn, &[Vec<u8>]) {
        (self, &[])
    }
}

impl sealed::Target for MapMut<'_> {
    fn target(&mut self) -> (&mut WriteTxn, &[Vec<u8>]) {
        self.parts_mut()
    }
}

/// Changes to one map, for [`WriteTxn`] (its top-level map) and [`MapMut`] (a sub-map) alike:
/// visible to the transaction at once, to others at its commit. (Implemented by pheap's types
/// only.)
///
/// ```
/// use pheap::prelude::*;
/// # let dir = tempfile::tempdir()?;
/// # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
/// let mut tx = heap.begin_write()?;
/// tx.insert(b"a", b"1")?;
/// tx.insert(b"b", b"2")?;
/// assert!(tx.remove(b"a")?);
/// assert_eq!(tx.get(b"b")?, Some(&b"2"[..])); // its own writes
/// assert_eq!(heap.begin_read()?.get(b"b")?, None); // nobody else's yet
/// let mut users = tx.map_mut("users")?; // maps nest
/// users.insert("alice", "...")?;
/// users.map_mut("alice/prefs")?.insert("theme", "dark")?;
/// tx.commit()?;
/// let rx = heap.begin_read()?;
/// assert_eq!(rx.len()?, 2);
/// let users = rx.map("users")?.expect("exists");
/// assert_eq!(users.map("alice/prefs")?.expect("exists").get("theme")?, Some(&b"dark"[..]));
/// assert!(matches!(users.get("alice/prefs"), Err(pheap::Error::WrongKind { .. })));
/// # Ok::<(), pheap::Error>(())
/// ```
pub trait Writable: sealed::Target {
    /// Insert or replace `key` -> `value` (plain bytes); returns whether it replaced a value.
    /// Values of 4 KiB or more are stored out of line, 64-byte aligned.
    ///
    /// # Errors
    ///
    /// [`Error::WrongKind`] if `key` holds a map (remove it first), [`Error::KeyTooLarge`],
    /// [`Error::ValueTooLarge`]: the transaction stays usable. [`Error::Corrupt`] or
    /// [`Error::Io`] fail the transaction.
    fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<bool> {
        self.insert_parts(key, Kind::Bytes, value.as_ref(), &[])
    }

    /// Insert or replace `key` with a value of `kind` ([`Kind::Bytes`] or [`Kind::Tagged`]) made
    /// of an inline part and out-of-line parts (each 64-byte aligned, each readable in place).
    ///
    /// # Errors
    ///
    /// As [`Writable::insert`]; [`Error::WrongKind`] for [`Kind::Map`] (use
    /// [`Writable::map_mut`]); [`Error::ValueTooLarge`] for more than 65,536 parts.
    fn insert_parts(
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
        let (tx, path) = self.target();
        tx.in_map(path, |w, map| {
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
    /// As [`Writable::insert`].
    fn insert_with(
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
        let (tx, path) = self.target();
        tx.in_map(path, |w, map| {
            let part = w.write_part_with(len as u64, &mut fill)?;
            let parts = [part];
            w.insert(map, key, &NewValue::Parts { kind: Kind::Bytes, inline: &[], parts: &parts })
        })
    }

    /// Insert or replace `key` with the bytes of `value` (a `#[repr(C)]` record, a slice of
    /// numbers...), to be read back in place with [`Readable::get_as`].
    ///
    /// # Errors
    ///
    /// As [`Writable::insert`].
    fn insert_as<T>(&mut self, key: impl AsRef<[u8]>, value: &T) -> Result<bool>
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
    fn remove(&mut self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key.as_ref();
        let (tx, path) = self.target();
        tx.in_map(path, |w, map| w.remove(map, key))
    }

    /// Remove every entry (freeing sub-maps and parts).
    ///
    /// # Errors
    ///
    /// As [`Writable::remove`].
    fn clear(&mut self) -> Result<()> {
        let (tx, path) = self.target();
        tx.in_map(path, |w, map| {
            w.free_map(map)?;
            Ok((MapRoot::EMPTY, ()))
        })
    }

    /// Keep only the entries for which `keep` returns true.
    ///
    /// # Errors
    ///
    /// As [`Writable::remove`]; an error of the walk.
    fn retain(&mut self, mut keep: impl FnMut(&[u8], Value<'_>) -> bool) -> Result<()> {
        let mut gone = Vec::new();
        let (tx, path) = self.target();
        for item in tx.map_at(path)?.iter() {
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
    /// as [`Writable::insert`] (an error of the bulk build fails the transaction).
    fn insert_many<K, V>(&mut self, entries: impl IntoIterator<Item = (K, V)>) -> Result<()>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let hasher = self.target().0.shared.hasher;
        let entries = entries.into_iter();
        // The entries stay where they were given; their trie order is a list of indices (a
        // sort of the entries themselves moved each one about twenty times, and dropped them
        // in hash order, which is random in memory).
        let mut items: Vec<(K, V)> = Vec::with_capacity(entries.size_hint().0);
        let mut order: Vec<(u64, u64, usize)> = Vec::with_capacity(entries.size_hint().0);
        for (i, (k, v)) in entries.enumerate() {
            let (kl, vl) = (k.as_ref().len(), v.as_ref().len());
            if kl > MAX_KEY_LEN {
                return Err(Error::KeyTooLarge { len: kl, max: MAX_KEY_LEN });
            }
            if vl > MAX_VALUE_LEN {
                return Err(Error::ValueTooLarge { len: vl, max: MAX_VALUE_LEN });
            }
            let h = hasher.hash(k.as_ref());
            order.push((order_key(h), h, i));
            items.push((k, v));
        }
        // Trie order; equal keys together, the last given last.
        let key = |o: &(u64, u64, usize)| items[o.2].0.as_ref();
        order.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| key(a).cmp(key(b))).then(a.2.cmp(&b.2))
        });
        let last = |j: usize| {
            order.get(j + 1).is_none_or(|n| n.0 != order[j].0 || key(n) != key(&order[j]))
        };
        let (tx, path) = self.target();
        if tx.map_at(path)?.is_empty()? {
            return tx.in_map(path, |w, map| {
                debug_assert!(map.is_empty());
                let mut leaves = Vec::with_capacity(order.len());
                for j in 0..order.len() {
                    // The entries are read in hash order, at random in memory: ask for the
                    // ones ahead now, so that their misses overlap: the entry itself 16 steps
                    // ahead, the bytes it points to (a second miss where they are an allocation
                    // of their own) 8 steps ahead, once the entry is in the cache.
                    if let Some(&(_, _, i)) = order.get(j + 16) {
                        prefetch_memory(&items[i], 64);
                    }
                    if let Some(&(_, _, i)) = order.get(j + 8) {
                        let (k, v) = &items[i];
                        prefetch_memory(k.as_ref(), 64);
                        prefetch_memory(v.as_ref(), 256);
                    }
                    if !last(j) {
                        continue;
                    }
                    let (_, h, i) = order[j];
                    let (k, v) = (items[i].0.as_ref(), items[i].1.as_ref());
                    let off = if v.len() >= OUT_OF_LINE_MIN {
                        let parts = w.write_parts(&[v])?;
                        w.write_leaf(
                            k,
                            &NewValue::Parts { kind: Kind::Bytes, inline: &[], parts: &parts },
                        )?
                    } else {
                        w.write_leaf(k, &NewValue::Inline { kind: Kind::Bytes, bytes: v })?
                    };
                    leaves.push((h, off));
                }
                Ok((w.build(&leaves)?, ()))
            });
        }
        for j in 0..order.len() {
            if last(j) {
                let (k, v) = &items[order[j].2];
                self.insert(k.as_ref(), v.as_ref())?;
            }
        }
        Ok(())
    }

    /// The sub-map under `key`, created empty if `key` is absent.
    ///
    /// # Errors
    ///
    /// [`Error::WrongKind`] if `key` holds a value that is not a map (nothing is overwritten);
    /// [`Error::NestingTooDeep`] below [`crate::MAX_NESTING`] levels; as [`Writable::insert`].
    fn map_mut(&mut self, key: impl AsRef<[u8]>) -> Result<MapMut<'_>> {
        self.map_mut_path(&[key])
    }

    /// The map at the end of `path` (a key per level, from this map), each level created empty
    /// if absent. An empty path is this map.
    ///
    /// # Errors
    ///
    /// As [`Writable::map_mut`], for the first level that fails (the levels before it stay
    /// created).
    fn map_mut_path<K: AsRef<[u8]>>(&mut self, path: &[K]) -> Result<MapMut<'_>> {
        let (tx, base) = self.target();
        if base.len() + path.len() > MAX_NESTING {
            return Err(Error::NestingTooDeep { max: MAX_NESTING });
        }
        let mut keys = base.to_vec();
        for key in path {
            tx.create_map(&keys, key.as_ref())?;
            keys.push(key.as_ref().to_vec());
        }
        Ok(MapMut::new(tx, keys))
    }
}

impl Writable for WriteTxn {}
impl Writable for MapMut<'_> {}
