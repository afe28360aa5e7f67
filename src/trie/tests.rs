//! The trie against a `HashMap`: inserts and removes through the allocator, lookups, iteration,
//! the canonical form (I8), and the persistence of a committed root while later ones are built.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::{Iter, KeyHasher, MapRoot, NewValue, Reader, TrieWriter, VERIFY_ON_READ_MAX};
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
    let got: Model = Iter::new(r, map)
        .map(|e| e.map(|l| (l.key.to_vec(), l.value.to_vec())))
        .collect::<crate::Result<_>>()
        .unwrap();
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
