//! The object model through the public API: nested maps, kinds, parts, typed views, values
//! written in place, owned handles, ordered, partitioned and resumable iteration, and the API a
//! Rust user expects.

use pheap::prelude::*;
use std::collections::BTreeSet;

use pheap::{Error, Heap, IterPosition, Kind};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

fn heap() -> (tempfile::TempDir, Heap) {
    let dir = tempfile::tempdir().unwrap();
    let heap = Heap::open(dir.path().join("objects.pheap")).unwrap();
    (dir, heap)
}

#[test]
fn maps_nest_see_their_own_writes_and_commit_together() {
    let (_dir, heap) = heap();
    let mut tx = heap.begin_write().unwrap();
    tx.insert("top", "1").unwrap();
    let mut users = tx.map_mut(b"users").unwrap();
    assert!(!users.insert(b"alice", b"a").unwrap());
    assert!(users.insert(b"alice", b"A").unwrap(), "insert says it replaced");
    users.map_mut(b"alice/prefs").unwrap().insert(b"theme", b"dark").unwrap();
    assert_eq!(users.get("alice").unwrap(), Some(&b"A"[..]));
    assert_eq!(users.len().unwrap(), 2);
    // The transaction sees its own writes in every map.
    let prefs = tx.map("users").unwrap().unwrap().map("alice/prefs").unwrap().unwrap();
    assert_eq!(prefs.get("theme").unwrap(), Some(&b"dark"[..]));
    // Others do not, until the commit, which covers every map at once.
    assert!(heap.begin_read().unwrap().map("users").unwrap().is_none());
    tx.commit().unwrap();

    let rx = heap.begin_read().unwrap();
    assert_eq!(rx.len().unwrap(), 2);
    let users = rx.map(b"users").unwrap().expect("exists");
    assert_eq!(users.len().unwrap(), 2);
    assert_eq!(users.get_value("alice/prefs").unwrap().unwrap().kind(), Kind::Map);
    assert_eq!(users.get_value("alice/prefs").unwrap().unwrap().map_len(), Some(1));
    assert_eq!(
        rx.map_path(&["users", "alice/prefs"]).unwrap().unwrap().get("theme").unwrap(),
        Some(&b"dark"[..])
    );
    assert!(rx.map_path(&["users", "nobody"]).unwrap().is_none());
    heap.check().unwrap();
}

#[test]
fn a_kind_is_never_changed_silently() {
    let (_dir, heap) = heap();
    let mut tx = heap.begin_write().unwrap();
    tx.insert("bytes", "v").unwrap();
    tx.map_mut("map").unwrap().insert("k", "v").unwrap();
    let wrong = |r: pheap::Result<()>, expected: Kind, found: Kind| match r {
        Err(Error::WrongKind { key, expected: e, found: f }) => {
            assert_eq!((e, f), (expected, found));
            assert!(!key.is_empty());
        }
        other => panic!("expected WrongKind, got {other:?}"),
    };
    wrong(tx.map_mut("bytes").map(|_| ()), Kind::Map, Kind::Bytes);
    wrong(tx.insert("map", "over it").map(|_| ()), Kind::Bytes, Kind::Map);
    wrong(tx.get("map").map(|_| ()), Kind::Bytes, Kind::Map);
    wrong(tx.map("bytes").map(|_| ()), Kind::Map, Kind::Bytes);
    let msg = tx.insert("map", "x").unwrap_err().to_string();
    assert!(msg.contains("\"map\"") && msg.contains("a map"), "{msg}");
    // Nothing changed, and the transaction is still usable.
    assert_eq!(tx.get("bytes").unwrap(), Some(&b"v"[..]));
    assert_eq!(tx.map("map").unwrap().unwrap().len().unwrap(), 1);
    tx.commit().unwrap();
    heap.check().unwrap();
}

#[test]
fn removing_a_map_frees_all_of_it() {
    let (_dir, heap) = heap();
    let mut tx = heap.begin_write().unwrap();
    tx.insert("keep", "me").unwrap();
    tx.commit().unwrap();
    heap.checkpoint().unwrap();
    let before = heap.stats().unwrap().live_bytes;
    let mut tx = heap.begin_write().unwrap();
    {
        let mut big = tx.map_mut("big").unwrap();
        for i in 0..20_000u32 {
            big.insert(i.to_le_bytes(), [7u8; 40]).unwrap();
        }
        let mut nested = big.map_mut("nested").unwrap();
        for i in 0..1000u32 {
            nested.insert_parts(i.to_le_bytes(), Kind::Tagged(3), b"h", &[&[1u8; 100]]).unwrap();
        }
    }
    tx.commit().unwrap();
    assert!(heap.stats().unwrap().live_bytes > before + 1_000_000);
    let mut tx = heap.begin_write().unwrap();
    assert!(tx.remove("big").unwrap());
    tx.commit().unwrap();
    // The freed records' list is metadata until it is released, at a later durable commit.
    for _ in 0..2 {
        heap.begin_write().unwrap().commit().unwrap();
    }
    let after = heap.stats().unwrap().live_bytes;
    // Everything the map held is free again (the allocator's metadata may differ a little).
    assert!(after < before + 16 * 1024, "live bytes {before} before, {after} after");
    heap.check().unwrap();
}

#[test]
fn parts_are_aligned_zero_copy_and_checked() {
    let (_dir, heap) = heap();
    let a: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let b = vec![5u8; 100];
    let mut tx = heap.begin_write().unwrap();
    assert!(!tx.insert_parts("multi", Kind::Tagged(9), b"header", &[&a, &b, b""]).unwrap());
    tx.insert("big", &a).unwrap();
    tx.insert("small", "s").unwrap();
    tx.commit().unwrap();

    let rx = heap.begin_read().unwrap();
    let v = rx.get_value("multi").unwrap().unwrap();
    assert_eq!(v.kind(), Kind::Tagged(9));
    assert_eq!(v.inline(), b"header");
    let parts: Vec<&[u8]> = v.parts().collect::<pheap::Result<_>>().unwrap();
    assert_eq!(parts, vec![&a[..], &b[..], &[][..]]);
    for p in &parts[..2] {
        assert_eq!(p.as_ptr() as usize % 64, 0, "out-of-line parts start 64-byte aligned");
    }
    assert!(matches!(rx.get("multi"), Err(Error::MultiPart { parts: 3, .. })));
    // A value of 4 KiB or more is one aligned part, read as plain bytes.
    let big = rx.get("big").unwrap().unwrap();
    assert_eq!(big, &a[..]);
    assert_eq!(big.as_ptr() as usize % 64, 0);
    assert_eq!(rx.get_value("big").unwrap().unwrap().part_count(), 1);
    assert_eq!(rx.get_value("small").unwrap().unwrap().part_count(), 0);
    assert_eq!(rx.get_verified("big").unwrap().unwrap(), &a[..]);
    heap.check().unwrap();
    assert!(heap.check().unwrap().parts >= 3);
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Debug, PartialEq)]
#[repr(C)]
struct Frob {
    foo: u64,
    bar: u64,
}

#[test]
fn typed_views_check_size_and_alignment() {
    let (_dir, heap) = heap();
    let xs: Vec<f64> = (0..1000).map(|i| i as f64 * 0.5).collect();
    let mut tx = heap.begin_write().unwrap();
    tx.insert_as("frob", &Frob { foo: 9, bar: 23 }).unwrap();
    tx.insert_as("xs", &xs[..]).unwrap();
    tx.insert("odd", [1u8; 12]).unwrap();
    // Leaves of 56 bytes in consecutive slots: their values alternate between 0 and 8 modulo 16.
    for i in 0..8 {
        tx.insert(format!("a{i}"), [0u8; 32]).unwrap();
    }
    tx.commit().unwrap();
    let rx = heap.begin_read().unwrap();
    assert_eq!(rx.get_as::<Frob>("frob").unwrap(), Some(&Frob { foo: 9, bar: 23 }));
    assert_eq!(rx.get_as::<[f64]>("xs").unwrap().unwrap(), &xs[..]);
    assert!(rx.get_as::<Frob>("missing").unwrap().is_none());
    match rx.get_as::<[u64]>("odd") {
        Err(Error::TypeMismatch { len: 12, reason, .. }) => assert!(reason.contains("length")),
        other => panic!("{other:?}"),
    }
    // u128 wants 16-byte alignment: an inline value may not have it, and that is an error.
    let mut misaligned = 0;
    for i in 0..8 {
        let k = format!("a{i}");
        let at = rx.get(&k).unwrap().unwrap().as_ptr() as usize;
        match rx.get_as::<[u128]>(&k) {
            Ok(Some(v)) => assert_eq!((v.len(), at % 16), (2, 0)),
            Err(Error::TypeMismatch { reason, .. }) => {
                assert!(reason.contains("aligned") && at % 16 == 8, "{reason}");
                misaligned += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(misaligned > 0, "some values sit at 8 modulo 16");
}

#[test]
fn insert_with_writes_large_values_in_place() {
    let (_dir, heap) = heap();
    let n = 4 << 20;
    let mut tx = heap.begin_write().unwrap();
    tx.insert_with("matrix", n * 8, |buf| {
        for (i, c) in buf.chunks_exact_mut(8).enumerate() {
            c.copy_from_slice(&(i as f64).to_le_bytes());
        }
    })
    .unwrap();
    tx.insert_with("tiny", 3, |buf| buf.copy_from_slice(b"abc")).unwrap();
    tx.commit().unwrap();
    let rx = heap.begin_read().unwrap();
    let m: &[f64] = rx.get_as("matrix").unwrap().unwrap();
    assert_eq!(m.len(), n);
    assert!(m.iter().enumerate().all(|(i, &x)| x == i as f64));
    assert_eq!(rx.get("tiny").unwrap(), Some(&b"abc"[..]));
    heap.check().unwrap();
}

#[test]
fn the_api_a_rust_user_expects() {
    let (dir, heap) = heap();
    assert_eq!(heap.path(), dir.path().join("objects.pheap"));
    let key = String::from("k1");
    let mut tx = heap.begin_write().unwrap();
    tx.insert(&key, String::from("v1")).unwrap();
    tx.insert("k2", b"v2").unwrap();
    tx.insert(vec![3u8], [3u8]).unwrap();
    tx.insert_many([("m1", "x"), ("m2", "y"), ("m3", "z")]).unwrap();
    tx.retain(|k, _| k != b"m2").unwrap();
    assert_eq!(tx.len().unwrap(), 5);
    tx.commit().unwrap();
    let rx = heap.begin_read().unwrap();
    let mut n = 0;
    for entry in &rx {
        let (k, v) = entry.unwrap();
        assert!(!k.is_empty() && !v.bytes().unwrap().is_empty());
        n += 1;
    }
    assert_eq!(n, 5);
    let it = rx.iter();
    assert_eq!(it.size_hint(), (5, Some(5)), "a whole walk knows its length");
    assert_eq!(rx.get(&key).unwrap(), Some(&b"v1"[..]));
    drop(rx);
    let mut tx = heap.begin_write().unwrap();
    tx.clear().unwrap();
    tx.commit().unwrap();
    assert!(heap.begin_read().unwrap().is_empty().unwrap());
    heap.check().unwrap();
}

#[test]
fn a_second_write_transaction_on_the_same_thread_is_an_error_not_a_deadlock() {
    let (dir, heap) = heap();
    let tx = heap.begin_write().unwrap();
    assert!(matches!(heap.begin_write(), Err(Error::WriteOnThisThread)));
    assert!(matches!(heap.checkpoint(), Err(Error::WriteOnThisThread)));
    // Another handle of the same file, too.
    let other = Heap::open(dir.path().join("objects.pheap")).unwrap();
    assert!(matches!(other.begin_write(), Err(Error::WriteOnThisThread)));
    // Another thread waits, as it should, and gets it once this one ends.
    let t = std::thread::scope(|s| {
        let h = s.spawn(|| other.begin_write().map(|tx| tx.txn_id()));
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(tx);
        h.join().unwrap()
    });
    assert!(t.is_ok());
    heap.begin_write().unwrap().commit().unwrap();
}

#[test]
fn owned_handles_keep_their_snapshot_alive() {
    let (_dir, heap) = heap();
    let mut tx = heap.begin_write().unwrap();
    tx.insert("k", "old").unwrap();
    tx.map_mut("m").unwrap().insert("inner", vec![4u8; 5000]).unwrap();
    tx.commit().unwrap();
    let shared = heap.begin_read_shared().unwrap();
    let v = shared.map_owned::<&str>(&[]).unwrap().unwrap().get("k").unwrap().unwrap();
    let inner = shared.map_owned(&["m"]).unwrap().unwrap().get("inner").unwrap().unwrap();
    let clone = shared.clone();
    drop(shared);
    let mut tx = heap.begin_write().unwrap();
    tx.insert("k", "new").unwrap();
    tx.remove("m").unwrap();
    tx.commit().unwrap();
    // The pin travels with the handles: the old snapshot is still what they read.
    let (a, b) = std::thread::spawn(move || (v.to_vec(), inner.len())).join().unwrap();
    assert_eq!((a, b), (b"old".to_vec(), 5000));
    assert_eq!(clone.get("k").unwrap(), Some(&b"old"[..]));
    let it = clone.map_owned::<&str>(&[]).unwrap().unwrap().iter().unwrap();
    drop(clone);
    drop(heap);
    let mut keys = BTreeSet::new();
    for r in it {
        let (k, v) = r.unwrap();
        match &k[..] {
            b"k" => assert_eq!(&v.bytes().unwrap()[..], b"old"),
            _ => {
                assert_eq!((v.kind(), v.map_len()), (Kind::Map, Some(1)));
                assert!(matches!(v.bytes(), Err(Error::WrongKind { .. })));
            }
        }
        keys.insert(k.to_vec());
    }
    assert_eq!(keys, BTreeSet::from([b"k".to_vec(), b"m".to_vec()]));
}

#[test]
fn owned_values_keep_their_parts_readable() {
    let (_dir, heap) = heap();
    let mut tx = heap.begin_write().unwrap();
    let big = vec![7u8; 10_000];
    tx.insert_parts("v", Kind::Tagged(3), b"head", &[&big[..], b"tail"]).unwrap();
    tx.map_mut("m").unwrap().insert("x", "y").unwrap();
    tx.commit().unwrap();
    let shared = heap.begin_read_shared().unwrap();
    // Read in place, then own: the same value either way.
    let borrowed = shared.get_value("v").unwrap().unwrap();
    let a = shared.own_value(&borrowed).unwrap();
    let b = shared.map_owned::<&str>(&[]).unwrap().unwrap().get_value("v").unwrap().unwrap();
    let m = shared.map_owned::<&str>(&[]).unwrap().unwrap().get_value("m").unwrap().unwrap();
    assert!(shared.map_owned(&["m"]).unwrap().unwrap().get_value("nothing").unwrap().is_none());
    assert!(shared.map_owned(&["nothing"]).unwrap().is_none());
    drop(shared);
    let mut tx = heap.begin_write().unwrap();
    tx.remove("v").unwrap();
    tx.commit().unwrap();
    drop(heap);
    for v in [a, b] {
        assert_eq!((v.kind(), &v.inline()[..]), (Kind::Tagged(3), &b"head"[..]));
        assert_eq!(v.parts().len(), 2);
        assert_eq!((&v.parts()[0][..], &v.parts()[1][..]), (&big[..], &b"tail"[..]));
        assert_eq!(v.parts()[0].as_ptr() as usize % 64, 0);
    }
    assert_eq!((m.kind(), m.map_len()), (Kind::Map, Some(1)));
    // A value from another heap's snapshot is refused, not misread.
    let (_d2, other) = self::heap();
    let mut tx = other.begin_write().unwrap();
    tx.insert("v", "x").unwrap();
    tx.commit().unwrap();
    let o = other.begin_read_shared().unwrap();
    let ov = o.get_value("v").unwrap().unwrap();
    let (_d3, third) = self::heap();
    let t = third.begin_read_shared().unwrap();
    assert!(matches!(t.own_value(&ov), Err(Error::Corrupt { .. })));
}

#[test]
fn long_parts_written_by_write_syscall_read_back_everywhere() {
    // Parts of 1 MiB or more go through write(2) instead of the mapping: the transaction, later
    // snapshots, the walk and a reopened handle all see the same bytes.
    let (dir, heap) = heap();
    let big: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    let small = vec![9u8; 5000];
    let mut tx = heap.begin_write().unwrap();
    tx.insert_parts("v", Kind::Tagged(0), b"item", &[&big[..], &small[..]]).unwrap();
    tx.insert("alone", &big[..(1 << 20)]).unwrap();
    {
        let v = tx.get_value("v").unwrap().unwrap();
        assert_eq!(v.part(0).unwrap().unwrap(), &big[..]);
    }
    tx.commit().unwrap();
    let rx = heap.begin_read().unwrap();
    let v = rx.get_value("v").unwrap().unwrap();
    assert_eq!((v.part(0).unwrap().unwrap(), v.part(1).unwrap().unwrap()), (&big[..], &small[..]));
    assert_eq!(v.part(0).unwrap().unwrap().as_ptr() as usize % 64, 0);
    assert_eq!(rx.get("alone").unwrap().unwrap(), &big[..(1 << 20)]);
    drop(rx);
    assert_eq!(heap.check().unwrap().parts, 3);
    drop(heap);
    let heap = Heap::open(dir.path().join("objects.pheap")).unwrap();
    let rx = heap.begin_read().unwrap();
    assert_eq!(rx.get_value("v").unwrap().unwrap().part(0).unwrap().unwrap(), &big[..]);
}

#[test]
fn maps_nest_to_the_limit_and_no_deeper() {
    let (_dir, heap) = heap();
    let path: Vec<String> = (0..pheap::MAX_NESTING).map(|i| format!("l{i}")).collect();
    let mut tx = heap.begin_write().unwrap();
    tx.map_mut_path(&path).unwrap().insert("deepest", "here").unwrap();
    let mut deeper = path.clone();
    deeper.push("one too many".into());
    assert!(matches!(tx.map_mut_path(&deeper), Err(Error::NestingTooDeep { .. })));
    tx.commit().unwrap();
    heap.check().unwrap();
    let rx = heap.begin_read().unwrap();
    assert_eq!(rx.map_path(&path).unwrap().unwrap().get("deepest").unwrap(), Some(&b"here"[..]));
    // A copy carries every level.
    let dir = tempfile::tempdir().unwrap();
    heap.copy_to(dir.path().join("c")).unwrap();
    let c = Heap::open(dir.path().join("c")).unwrap();
    let rx = c.begin_read().unwrap();
    assert_eq!(rx.map_path(&path).unwrap().unwrap().len().unwrap(), 1);
}

#[test]
fn partitions_split_a_map_and_iteration_resumes_where_it_stopped() {
    let (_dir, heap) = heap();
    let mut tx = heap.begin_write().unwrap();
    let mut m = tx.map_mut("m").unwrap();
    for i in 0..5000u32 {
        m.insert(i.to_le_bytes(), i.to_le_bytes()).unwrap();
    }
    tx.commit().unwrap();
    let rx = heap.begin_read().unwrap();
    let map = rx.map("m").unwrap().unwrap();
    let all: BTreeSet<Vec<u8>> = map.iter().map(|r| r.unwrap().0.to_vec()).collect();
    for n in [1, 3, 7, 32] {
        let mut seen = BTreeSet::new();
        for i in 0..n {
            for r in map.iter_partition(i, n) {
                assert!(seen.insert(r.unwrap().0.to_vec()), "partitions overlap");
            }
        }
        assert_eq!(seen, all, "{n} partitions");
    }
    // Stop half-way, save the position, go on in a later snapshot from another handle.
    let mut it = map.iter();
    let first: Vec<Vec<u8>> = it.by_ref().take(2500).map(|r| r.unwrap().0.to_vec()).collect();
    let saved = it.position().unwrap().to_bytes();
    drop(it);
    drop(rx);
    let mut tx = heap.begin_write().unwrap();
    tx.map_mut("m").unwrap().insert("late", "x").unwrap();
    tx.commit().unwrap();
    let shared = heap.begin_read_shared().unwrap();
    let pos = IterPosition::from_bytes(&saved).unwrap();
    let rest: Vec<Vec<u8>> = shared
        .map_owned(&["m"])
        .unwrap()
        .unwrap()
        .iter_after(&pos)
        .unwrap()
        .map(|r| r.unwrap().0.to_vec())
        .collect();
    let mut got: BTreeSet<Vec<u8>> = first.into_iter().collect();
    let n_rest = rest.len();
    got.extend(rest);
    got.remove(&b"late"[..]);
    assert_eq!(got, all, "the two halves hold every key once");
    assert!(n_rest >= 2500);
    // The ordered walk and the owned one agree on the order.
    let ordered: Vec<Vec<u8>> =
        shared.map("m").unwrap().unwrap().iter().map(|r| r.unwrap().0.to_vec()).collect();
    let owned: Vec<Vec<u8>> = shared
        .map_owned(&["m"])
        .unwrap()
        .unwrap()
        .iter()
        .unwrap()
        .map(|r| r.unwrap().0.to_vec())
        .collect();
    assert_eq!(ordered, owned);
}

#[test]
fn copies_and_compaction_keep_maps_parts_and_tags() {
    let (dir, heap) = heap();
    let mut tx = heap.begin_write().unwrap();
    for i in 0..300u32 {
        let mut m = tx.map_mut_path(&[format!("m{}", i % 7), format!("n{}", i % 3)]).unwrap();
        m.insert_parts(
            i.to_le_bytes(),
            Kind::Tagged(i as u8),
            b"x",
            &[&vec![i as u8; 70_000 * (i as usize % 2)]],
        )
        .unwrap();
        tx.insert(format!("junk{i}"), vec![1u8; 3000]).unwrap();
    }
    tx.commit().unwrap();
    let mut tx = heap.begin_write().unwrap();
    for i in 0..300u32 {
        tx.remove(format!("junk{i}")).unwrap();
    }
    tx.commit().unwrap();
    let dump = |h: &Heap| {
        let rx = h.begin_read().unwrap();
        let mut out = Vec::new();
        for i in 0..7 {
            for j in 0..3 {
                let m = rx.map_path(&[format!("m{i}"), format!("n{j}")]).unwrap().unwrap();
                for r in m.iter() {
                    let (k, v) = r.unwrap();
                    let parts: Vec<Vec<u8>> = v.parts().map(|p| p.unwrap().to_vec()).collect();
                    out.push((i, j, k.to_vec(), v.kind(), v.inline().to_vec(), parts));
                }
            }
        }
        // Another file hashes with another seed: compare as sets.
        out.sort();
        out
    };
    let before = dump(&heap);
    heap.compact().unwrap();
    heap.check().unwrap();
    assert!(dump(&heap) == before, "compaction changed the contents");
    let copy = dir.path().join("copy.pheap");
    heap.copy_to(&copy).unwrap();
    let c = Heap::open(&copy).unwrap();
    c.check().unwrap();
    assert!(dump(&c) == before, "the copy differs");
}

#[test]
fn insert_many_matches_inserting_one_by_one() {
    let (_dir, heap) = heap();
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = (0..20_000u32)
        .map(|i| (format!("k{}", i % 15_000).into_bytes(), vec![i as u8; (i % 300) as usize]))
        .collect();
    entries.push((b"big".to_vec(), vec![3u8; 70_000]));
    entries.push((Vec::new(), b"empty key".to_vec()));
    // The expected map: later pairs win.
    let mut model = std::collections::BTreeMap::new();
    for (k, v) in &entries {
        model.insert(k.clone(), v.clone());
    }
    let mut tx = heap.begin_write().unwrap();
    tx.insert_many(entries.clone()).unwrap(); // into an empty map: built bottom-up
    let mut sub = tx.map_mut("sub").unwrap();
    sub.insert("pre", "existing").unwrap();
    sub.insert_many(entries.clone()).unwrap(); // into a non-empty one: sorted inserts
    tx.commit().unwrap();
    heap.check().unwrap();
    let rx = heap.begin_read().unwrap();
    let got: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = rx
        .iter()
        .filter(|r| r.as_ref().unwrap().1.kind() == Kind::Bytes)
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.bytes().unwrap().to_vec())).unwrap())
        .collect();
    assert_eq!(got, model);
    let sub = rx.map("sub").unwrap().unwrap();
    assert_eq!(sub.len().unwrap(), model.len() + 1);
    for (k, v) in &model {
        assert_eq!(sub.get(k).unwrap(), Some(&v[..]));
    }
    let mut tx = heap.begin_write().unwrap();
    let too_long = vec![0u8; pheap::MAX_KEY_LEN + 1];
    assert!(matches!(tx.insert_many([(too_long, b"v".to_vec())]), Err(Error::KeyTooLarge { .. })));
    tx.insert("still", "usable").unwrap();
    tx.commit().unwrap();
}

#[test]
fn owned_handles_are_send_sync_and_static() {
    fn owned<T: Send + Sync + 'static>() {}
    owned::<pheap::SharedRead>();
    owned::<pheap::OwnedBytes>();
    owned::<pheap::OwnedValue>();
    owned::<pheap::OwnedIter>();
    owned::<pheap::ReadTxn>();
    owned::<IterPosition>();
    fn clone<T: Clone + AsRef<[u8]>>() {}
    clone::<pheap::OwnedBytes>();
}
