//! Typed maps: keys and values as Rust types through [`Codec`]s, in the spirit of heed's codecs
//! and redb's `TableDefinition`, so that a Rust user never serialises by hand.
//!
//! ```
//! # use pheap::prelude::*;
//! use pheap::typed::{MapDef, Record, Str};
//! use pheap::zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
//!
//! #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Debug, PartialEq)]
//! #[zerocopy(crate = "pheap::zerocopy")] // pheap re-exports zerocopy: no dependency to add
//! #[repr(C)]
//! struct Frob { foo: u64, bar: u64 }
//!
//! const FROBS: MapDef<Str, Record<Frob>> = MapDef::new("frobs");
//! # let dir = tempfile::tempdir()?;
//! # let heap = pheap::Heap::open(dir.path().join("data.pheap"))?;
//! let mut tx = heap.begin_write()?;
//! tx.typed_mut(FROBS)?.insert("x", &Frob { foo: 9, bar: 23 })?;
//! tx.commit()?;
//! let rx = heap.begin_read()?;
//! let frobs = rx.typed(FROBS)?.expect("the map exists");
//! assert_eq!(frobs.get("x")?, Some(&Frob { foo: 9, bar: 23 })); // a view of the file, no copy
//! # Ok::<(), pheap::Error>(())
//! ```
//! # use pheap::prelude::*;
//!
//! # What a record's layout needs
//!
//! A [`Record`] is read in place, so its bytes must be all of it: `#[repr(C)]` (a fixed field
//! order) and **no padding**, since padding bytes have no defined value to store. The compiler
//! says so with an error naming `IntoBytes` and padding. `struct Order { id: u64, qty: u32,
//! price: f64 }` has 4 bytes of padding after `qty` (to align `price`); fix it by ordering the
//! fields largest first and filling the tail explicitly (`id: u64, price: f64, qty: u32, _pad:
//! u32`), or by using wider fields (`qty: u64`). Fields are numbers, arrays of them, or other
//! such records; values come back 8-byte aligned (64-byte from 4 KiB), which covers every field
//! type up to `u64`/`f64`.
//!
//! Any `serde` type is stored with [`Serde`] under pheap's `serde` feature
//! (`pheap = { version = "...", features = ["serde"] }`).

use crate::{Readable, Writable};
use std::borrow::Cow;
use std::marker::PhantomData;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::error::{Error, Result};
use crate::txn::{Map, MapMut, ReadTxn, WriteTxn};

/// How a type is stored as bytes, as a key or a value.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a pheap codec",
    note = "the codecs: Bytes, Str, the integer and float types, Record<T> (a #[repr(C)] \
            zerocopy type without padding), and Serde<T> (pheap's `serde` feature)"
)]
pub trait Codec {
    /// What is written.
    type Write: ?Sized;
    /// What is read back, borrowing the transaction where the codec can (zero copy).
    type Read<'a>;
    /// The bytes of `v`.
    fn encode(v: &Self::Write) -> Cow<'_, [u8]>;
    /// The value of `bytes` (which `key` holds, for error messages).
    ///
    /// # Errors
    ///
    /// [`Error::TypeMismatch`] if the bytes are not a value of the type.
    fn decode<'a>(key: &[u8], bytes: &'a [u8]) -> Result<Self::Read<'a>>;
}

fn mismatch(key: &[u8], type_name: &'static str, len: usize, reason: &'static str) -> Error {
    Error::TypeMismatch { key: key.to_vec(), type_name, len, reason }
}

/// Raw bytes.
#[derive(Debug)]
pub enum Bytes {}

impl Codec for Bytes {
    type Write = [u8];
    type Read<'a> = &'a [u8];
    fn encode(v: &[u8]) -> Cow<'_, [u8]> {
        Cow::Borrowed(v)
    }
    fn decode<'a>(_: &[u8], bytes: &'a [u8]) -> Result<&'a [u8]> {
        Ok(bytes)
    }
}

/// UTF-8 text, read back as `&str` without a copy.
#[derive(Debug)]
pub enum Str {}

impl Codec for Str {
    type Write = str;
    type Read<'a> = &'a str;
    fn encode(v: &str) -> Cow<'_, [u8]> {
        Cow::Borrowed(v.as_bytes())
    }
    fn decode<'a>(key: &[u8], bytes: &'a [u8]) -> Result<&'a str> {
        std::str::from_utf8(bytes).map_err(|_| mismatch(key, "str", bytes.len(), "not UTF-8"))
    }
}

/// A `zerocopy` record (`#[repr(C)]` struct, or a slice such as `[f64]`), read back in place as
/// `&T`: size and alignment checked, never a misaligned reference.
#[derive(Debug)]
pub struct Record<T: ?Sized>(PhantomData<T>);

impl<T> Codec for Record<T>
where
    T: ?Sized + FromBytes + IntoBytes + KnownLayout + Immutable + 'static,
{
    type Write = T;
    type Read<'a> = &'a T;
    fn encode(v: &T) -> Cow<'_, [u8]> {
        Cow::Borrowed(v.as_bytes())
    }
    fn decode<'a>(key: &[u8], bytes: &'a [u8]) -> Result<&'a T> {
        T::ref_from_bytes(bytes).map_err(|e| {
            let reason = match e {
                zerocopy::CastError::Alignment(_) => "the value is not aligned for the type",
                _ => "the value's length is not a size of the type",
            };
            mismatch(key, std::any::type_name::<T>(), bytes.len(), reason)
        })
    }
}

macro_rules! int_codec {
    ($($t:ty),*) => {$(
        /// Little-endian, fixed width.
        impl Codec for $t {
            type Write = $t;
            type Read<'a> = $t;
            fn encode(v: &$t) -> Cow<'_, [u8]> {
                Cow::Owned(v.to_le_bytes().to_vec())
            }
            fn decode(key: &[u8], bytes: &[u8]) -> Result<$t> {
                let b = bytes.try_into().map_err(|_| {
                    mismatch(key, stringify!($t), bytes.len(), "the value's length is not the type's")
                })?;
                Ok(<$t>::from_le_bytes(b))
            }
        }
    )*};
}
int_codec!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, f32, f64);

/// Any `serde` type, in the compact `postcard` encoding (feature `serde`); read back owned.
#[cfg(feature = "serde")]
#[derive(Debug)]
pub struct Serde<T>(PhantomData<T>);

/// Any `serde` type: needs pheap's `serde` feature (`pheap = { version = "...", features =
/// ["serde"] }`). Without it this type is not a [`Codec`], and a map of it says so.
#[cfg(not(feature = "serde"))]
#[derive(Debug)]
pub struct Serde<T>(PhantomData<T>);

#[cfg(feature = "serde")]
impl<T> Codec for Serde<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    type Write = T;
    type Read<'a> = T;
    fn encode(v: &T) -> Cow<'_, [u8]> {
        // Serialising into a Vec fails only for types serde cannot represent at all.
        Cow::Owned(postcard::to_allocvec(v).expect("a serde type postcard can encode"))
    }
    fn decode(key: &[u8], bytes: &[u8]) -> Result<T> {
        postcard::from_bytes(bytes).map_err(|_| {
            mismatch(
                key,
                std::any::type_name::<T>(),
                bytes.len(),
                "not a postcard encoding of the type",
            )
        })
    }
}

/// The codecs a [`MapDef`] names (a marker: `Send`, `Sync` and `Copy` whatever they are).
type Codecs<K, V> = PhantomData<(fn() -> K, fn() -> V)>;

/// A typed map's name and its key and value codecs: a `const` shared by writers and readers.
#[derive(Debug)]
pub struct MapDef<K, V> {
    name: &'static str,
    _types: Codecs<K, V>,
}

impl<K, V> Clone for MapDef<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for MapDef<K, V> {}

impl<K, V> MapDef<K, V> {
    /// The typed map stored as the sub-map `name` of the top-level map.
    pub const fn new(name: &'static str) -> MapDef<K, V> {
        MapDef { name, _types: PhantomData }
    }

    /// The sub-map's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// The value of `key` in `map`, decoded.
fn typed_get<'a, K: Codec, V: Codec>(map: Map<'a>, key: &K::Write) -> Result<Option<V::Read<'a>>> {
    let k = K::encode(key);
    match map.get(&k)? {
        Some(b) => V::decode(&k, b).map(Some),
        None => Ok(None),
    }
}

/// A typed read view of a map.
#[derive(Debug)]
pub struct Typed<'a, K: Codec, V: Codec> {
    map: Map<'a>,
    _types: PhantomData<(K, V)>,
}

impl<'a, K: Codec, V: Codec> Typed<'a, K, V> {
    /// The typed view of an untyped map.
    pub fn of(map: Map<'a>) -> Typed<'a, K, V> {
        Typed { map, _types: PhantomData }
    }

    /// The value of `key`.
    ///
    /// # Errors
    ///
    /// As [`Readable::get`]; [`Error::TypeMismatch`] if the value does not decode.
    pub fn get(&self, key: &K::Write) -> Result<Option<V::Read<'a>>> {
        typed_get::<K, V>(self.map, key)
    }

    /// Number of entries.
    ///
    /// # Errors
    ///
    /// As [`Readable::len`].
    pub fn len(&self) -> Result<usize> {
        self.map.len()
    }

    /// Does the map hold no entry?
    ///
    /// # Errors
    ///
    /// As [`Readable::len`].
    pub fn is_empty(&self) -> Result<bool> {
        self.map.is_empty()
    }

    /// Every entry, decoded, in hash order.
    pub fn iter(&self) -> impl Iterator<Item = Result<(K::Read<'a>, V::Read<'a>)>> + 'a {
        self.map.iter().map(|item| {
            let (k, v) = item?;
            let b = v.bytes()?;
            Ok((K::decode(k, k)?, V::decode(k, b)?))
        })
    }
}

/// A typed map being changed in a write transaction.
#[derive(Debug)]
pub struct TypedMut<'t, K: Codec, V: Codec> {
    map: MapMut<'t>,
    _types: PhantomData<(K, V)>,
}

impl<'t, K: Codec, V: Codec> TypedMut<'t, K, V> {
    /// The typed handle of an untyped map.
    pub fn of(map: MapMut<'t>) -> TypedMut<'t, K, V> {
        TypedMut { map, _types: PhantomData }
    }

    /// Insert or replace; returns whether it replaced a value.
    ///
    /// # Errors
    ///
    /// As [`Writable::insert`].
    pub fn insert(&mut self, key: &K::Write, value: &V::Write) -> Result<bool> {
        self.map.insert(K::encode(key), V::encode(value))
    }

    /// Remove; returns whether the key was present.
    ///
    /// # Errors
    ///
    /// As [`Writable::remove`].
    pub fn remove(&mut self, key: &K::Write) -> Result<bool> {
        self.map.remove(K::encode(key))
    }

    /// The value of `key` as the transaction sees it.
    ///
    /// # Errors
    ///
    /// As [`Typed::get`].
    pub fn get(&self, key: &K::Write) -> Result<Option<V::Read<'_>>> {
        typed_get::<K, V>(self.map.as_map()?, key)
    }

    /// Number of entries.
    ///
    /// # Errors
    ///
    /// As [`Readable::len`].
    pub fn len(&self) -> Result<usize> {
        self.map.len()
    }

    /// Does the map hold no entry?
    ///
    /// # Errors
    ///
    /// As [`Readable::len`].
    pub fn is_empty(&self) -> Result<bool> {
        self.map.is_empty()
    }
}

impl ReadTxn {
    /// The typed map `def`, if it exists.
    ///
    /// # Errors
    ///
    /// As [`Readable::map`].
    pub fn typed<K: Codec, V: Codec>(&self, def: MapDef<K, V>) -> Result<Option<Typed<'_, K, V>>> {
        Ok(self.map(def.name)?.map(Typed::of))
    }
}

impl WriteTxn {
    /// The typed map `def`, created if missing.
    ///
    /// # Errors
    ///
    /// As [`Writable::map_mut`].
    pub fn typed_mut<K: Codec, V: Codec>(
        &mut self,
        def: MapDef<K, V>,
    ) -> Result<TypedMut<'_, K, V>> {
        Ok(TypedMut::of(self.map_mut(def.name)?))
    }
}
