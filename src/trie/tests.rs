//! The trie against a `HashMap`: inserts and removes through the allocator, lookups, iteration,
//! the canonical form (I8), and the persistence of a committed root while later ones are built.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::{Cursor, KeyHasher, MapRoot, NewValue, Reader, TrieWriter, VERIFY_ON_READ_MAX};
use crate::alloc::{Allocator, Pager};
use crate::format::*;
use crate::storage::Storage;
use crate::storage::mem::MemStorage;

type Model = HashMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Clone)]
enum Op {
    Insert(u16, u16),
    Remove(u16),
    /// Commit: the map so far becomes a snapshot that later transactions must not disturb.
    Commit,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u16..2000, 0u16..300).prop_map(|(k, l)| Op::Insert(k, l)),
        3 => (0u16..2000).prop_map(Op::Remove),
        1 => Just(Op::Commit),
    ]
}

fn key(k: u16) -> Vec<u8> {
    format!("{k}").repeat(1 + k as usize % 3).into_bytes()
}

fn value(k: u16, len: u16) -> Vec<u8> {
    (0..len).map(|i| (i ^ k) as u8).collect()
}

fn reader(a: &Allocator) -> Reader<'_> {
    Reader { view: a.view(), limit: a.end() }
}

/// Everything `map` holds, by iteration; also checks every lookup, the entry count, and that
/// below the root no node holds a lone leaf (I8).
fn check(a: &Allocator, hasher: KeyHasher, map: MapRoot, model: &Model) {
    let r = reader(a);
    let mut walk = Cursor::new(map, 0, None, None);
    let mut got = Model::new();
    while let Some(l) = walk.next(&r, &hasher).unwrap() {
        assert!(got.insert(l.key.to_vec(), l.value.to_vec()).is_none(), "a key walked twice");
    }
    assert_eq!(&got, model);
    assert_eq!(map.entries, model.len() as u64);
    for (k, v) in model {
        let found =
            r.get(map.root, hasher.hash(k), k, VERIFY_ON_READ_MAX).unwrap().map(|l| l.value);
        assert_eq!(found, Some(&v[..]));
    }
    assert!(r.get(map.root, hasher.hash(b"absent"), b"absent", 0).unwrap().is_none());
    if !map.is_empty() {
        canonical(&r, map.root, 0);
    }
}

fn canonical(r: &Reader<'_>, off: Offset, depth: u32) {
    let n = r.node(off).unwrap();
    if depth > 0 {
        assert!(
            !(n.children.len() == 1 && n.leaf_count() == 1),
            "a lone leaf below the root at depth {depth}"
        );
    }
    for c in &n.children[n.leaf_count()..] {
        canonical(r, Offset(c.get()), depth + 1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PHEAP_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64)
    ))]

    #[test]
    fn trie_matches_a_hash_map(ops in prop::collection::vec(op(), 1..400), seed in any::<[u64; 2]>()) {
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new(128 << 20));
        storage.grow(DATA_START).unwrap();
        let mut a = Allocator::empty(Pager::new(storage));
        let hasher = KeyHasher::new(seed);
        let mut txn = 0;
        a.begin_txn(TxnId(txn), TxnId(txn)).unwrap();
        let (mut map, mut model) = (MapRoot::EMPTY, Model::new());
        // The last committed snapshot: kept pinned, so nothing it reaches is reused.
        let (mut pinned, mut pinned_model) = (MapRoot::EMPTY, Model::new());
        for op in ops {
            match op {
                Op::Insert(k, len) => {
                    let v = value(k, len);
                    let v = NewValue::Inline { kind: crate::Kind::Bytes, bytes: &v };
                    let (m, existed) =
                        TrieWriter { alloc: &mut a, hasher }.insert(map, &key(k), &v).unwrap();
                    prop_assert_eq!(existed, model.insert(key(k), value(k, len)).is_some());
                    map = m;
                }
                Op::Remove(k) => {
                    let (m, existed) = TrieWriter { alloc: &mut a, hasher }.remove(map, &key(k)).unwrap();
                    prop_assert_eq!(existed, model.remove(&key(k)).is_some());
                    map = m;
                }
                Op::Commit => {
                    check(&a, hasher, map, &model);
                    txn += 1;
                    a.persist(TxnId(txn), TxnId(txn), false, &|_| true).unwrap();
                    a.committed(true);
                    // The previous snapshot stays pinned through the next transaction.
                    let oldest = txn - 1;
                    a.begin_txn(TxnId(oldest), TxnId(oldest)).unwrap();
                    check(&a, hasher, pinned, &pinned_model);
                    (pinned, pinned_model) = (map, model.clone());
                }
            }
        }
        check(&a, hasher, map, &model);
        check(&a, hasher, pinned, &pinned_model);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PHEAP_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64)
    ))]

    /// The ordered walk against a sorted model: order, partitions, resumption at any entry (in the
    /// same map and in one changed since), and a bulk-built map equal to an inserted one.
    #[test]
    fn ordered_walks_partitions_and_positions_match_a_sorted_model(
        keys in prop::collection::btree_set(0u16..5000, 0..600),
        later in prop::collection::btree_set(0u16..5000, 0..50),
        cut in any::<prop::sample::Index>(),
        parts in 1usize..40,
        seed in any::<[u64; 2]>(),
    ) {
        use super::{Cursor, order_key};
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new(64 << 20));
        storage.grow(DATA_START).unwrap();
        let mut a = Allocator::empty(Pager::new(storage));
        a.begin_txn(TxnId(0), TxnId(0)).unwrap();
        let hasher = KeyHasher::new(seed);
        let mut map = MapRoot::EMPTY;
        for &k in &keys {
            let v = value(k, 8);
            let v = NewValue::Inline { kind: crate::Kind::Bytes, bytes: &v };
            map = TrieWriter { alloc: &mut a, hasher }.insert(map, &key(k), &v).unwrap().0;
        }
        // The model: (order key, key), sorted (two numbers can make one key: a set).
        let model: Vec<(u64, Vec<u8>)> = keys
            .iter()
            .map(|&k| (order_key(hasher.hash(&key(k))), key(k)))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let walk = |a: &Allocator, map: MapRoot, lo: u64, hi: Option<u64>, after| {
            let r = reader(a);
            let mut c = Cursor::new(map, lo, hi, after);
            let mut out = Vec::new();
            while let Some(l) = c.next(&r, &hasher).unwrap() {
                out.push((order_key(hasher.hash(l.key)), l.key.to_vec()));
            }
            out
        };
        prop_assert_eq!(&walk(&a, map, 0, None, None), &model);
        // Shards: each its range, together everything.
        let mut union = Vec::new();
        for i in 0..parts {
            let at = |i: usize| ((i as u128) << 64) / parts as u128;
            let (lo, hi) = (at(i) as u64, (i + 1 < parts).then(|| at(i + 1) as u64));
            let part = walk(&a, map, lo, hi, None);
            prop_assert!(part.iter().all(|e| e.0 >= lo && hi.is_none_or(|h| e.0 < h)));
            union.extend(part);
        }
        prop_assert_eq!(&union, &model);
        // Resume after any entry, in this map and after more inserts.
        if !model.is_empty() {
            let i = cut.index(model.len());
            let pos = super::Position { order: model[i].0, key: model[i].1.clone() };
            prop_assert_eq!(&walk(&a, map, 0, None, Some(pos.clone()))[..], &model[i + 1..]);
            for &k in &later {
                let v = value(k, 3);
                let v = NewValue::Inline { kind: crate::Kind::Bytes, bytes: &v };
                map = TrieWriter { alloc: &mut a, hasher }.insert(map, &key(k), &v).unwrap().0;
            }
            let all: std::collections::BTreeSet<(u64, Vec<u8>)> = keys
                .union(&later)
                .map(|&k| (order_key(hasher.hash(&key(k))), key(k)))
                .collect();
            let rest: Vec<_> = all.into_iter().filter(|e| (e.0, &e.1) > (pos.order, &pos.key)).collect();
            prop_assert_eq!(walk(&a, map, 0, None, Some(pos)), rest);
        }
        // A bulk build of the model's keys is the same map: the same entries in the same order,
        // canonical, every lookup found.
        let mut leaves = Vec::new();
        for (_, k) in &model {
            let v = value(0, 8);
            let v = NewValue::Inline { kind: crate::Kind::Bytes, bytes: &v };
            let off = TrieWriter { alloc: &mut a, hasher }.write_leaf(k, &v).unwrap();
            leaves.push((hasher.hash(k), off));
        }
        let built = TrieWriter { alloc: &mut a, hasher }.build(&leaves).unwrap();
        prop_assert_eq!(walk(&a, built, 0, None, None), model.clone());
        let expect: Model = model.iter().map(|(_, k)| (k.clone(), value(0, 8))).collect();
        check(&a, hasher, built, &expect);
    }
}
