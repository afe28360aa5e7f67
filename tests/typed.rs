//! Typed maps: codecs for text, integers, zerocopy records and (feature `serde`) serde types.

use pheap::prelude::*;
use pheap::typed::{Bytes, MapDef, Record, Str};
use pheap::{Error, Heap};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Debug, PartialEq)]
#[repr(C)]
struct Frob {
    foo: u64,
    bar: u64,
}

const FROBS: MapDef<u64, Record<Frob>> = MapDef::new("frobs");
const NAMES: MapDef<Str, Str> = MapDef::new("names");
const SERIES: MapDef<Bytes, Record<[f64]>> = MapDef::new("series");

#[test]
fn typed_maps_round_trip_and_check_their_types() {
    let dir = tempfile::tempdir().unwrap();
    let heap = Heap::open(dir.path().join("t.pheap")).unwrap();
    let mut tx = heap.begin_write().unwrap();
    {
        let mut frobs = tx.typed_mut(FROBS).unwrap();
        for x in 0..100u64 {
            assert!(!frobs.insert(&x, &Frob { foo: 9, bar: 23 + x }).unwrap());
        }
        assert!(frobs.insert(&7, &Frob { foo: 9, bar: 0 }).unwrap());
        assert_eq!(frobs.get(&7).unwrap(), Some(&Frob { foo: 9, bar: 0 }));
        assert_eq!(frobs.len().unwrap(), 100);
    }
    tx.typed_mut(NAMES).unwrap().insert("alice", "Alice Liddell").unwrap();
    tx.typed_mut(SERIES).unwrap().insert(&b"s"[..], &[1.0, 2.0, 3.5][..]).unwrap();
    // A value that is not UTF-8 under a Str map is a typed error, not a panic.
    tx.map_mut("names").unwrap().insert("bad", [0xff, 0xfe]).unwrap();
    tx.commit().unwrap();

    let rx = heap.begin_read().unwrap();
    let frobs = rx.typed(FROBS).unwrap().unwrap();
    assert_eq!(frobs.get(&42).unwrap(), Some(&Frob { foo: 9, bar: 65 }));
    assert_eq!(frobs.iter().count(), 100);
    let total: u64 = frobs.iter().map(|r| r.unwrap().1.bar).sum();
    assert_eq!(total, (0..100u64).map(|x| 23 + x).sum::<u64>() - 30);
    let names = rx.typed(NAMES).unwrap().unwrap();
    assert_eq!(names.get("alice").unwrap(), Some("Alice Liddell"));
    assert!(matches!(names.get("bad"), Err(Error::TypeMismatch { .. })));
    assert_eq!(
        rx.typed(SERIES).unwrap().unwrap().get(&b"s"[..]).unwrap(),
        Some(&[1.0, 2.0, 3.5][..])
    );
    // The wrong codec for a map's values: an error naming the type.
    let wrong: MapDef<u64, u32> = MapDef::new("frobs");
    match rx.typed(wrong).unwrap().unwrap().get(&1) {
        Err(Error::TypeMismatch { type_name, len: 16, .. }) => assert_eq!(type_name, "u32"),
        other => panic!("{other:?}"),
    }
    let missing: MapDef<Str, Str> = MapDef::new("nothing");
    assert!(rx.typed(missing).unwrap().is_none());
}

#[cfg(feature = "serde")]
#[test]
fn serde_values_round_trip() {
    use pheap::typed::Serde;
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct User {
        name: String,
        tags: Vec<String>,
        age: Option<u32>,
    }
    const USERS: MapDef<Str, Serde<User>> = MapDef::new("users");
    let dir = tempfile::tempdir().unwrap();
    let heap = Heap::open(dir.path().join("s.pheap")).unwrap();
    let u = User { name: "Alice".into(), tags: vec!["admin".into()], age: Some(30) };
    let mut tx = heap.begin_write().unwrap();
    tx.typed_mut(USERS).unwrap().insert("alice", &u).unwrap();
    tx.map_mut("users").unwrap().insert("junk", [0xff; 3]).unwrap();
    tx.commit().unwrap();
    let rx = heap.begin_read().unwrap();
    let users = rx.typed(USERS).unwrap().unwrap();
    assert_eq!(users.get("alice").unwrap(), Some(u));
    assert!(matches!(users.get("junk"), Err(Error::TypeMismatch { .. })));
}
