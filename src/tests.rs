//! Tests that need the simulated disk or the crate's insides: the model tests (the test kit's
//! harness on the simulated disk, through crashes, and on real files), I/O failures, full disk.

use crate::{Readable, Writable};
use std::sync::Arc;

use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::meta::new_heap_image;
use crate::storage::mem::{FailKind, FailPlan, MemStorage};
use crate::testkit::{
    CAP, Harness, Model, Val, boot_id as boot, contents, file_ops, open_mem, sim_ops,
};
use crate::{Durability, Error, Heap};

fn new_mem(boot_id: [u8; 16]) -> (Arc<MemStorage>, Heap) {
    let s = Arc::new(MemStorage::from_image(&new_heap_image(&boot_id).unwrap(), CAP));
    let h = open_mem(&s, boot_id).unwrap();
    (s, h)
}

fn value(len: u32, fill: u8) -> Vec<u8> {
    (0..len).map(|i| fill.wrapping_add(i as u8)).collect()
}

/// A power loss that keeps each unsynced write with probability `keep` (in 1/256ths), drawn
/// from `seed`.
fn power_loss(s: &MemStorage, seed: u64, keep: u8) -> Vec<u8> {
    let mut rng = SmallRng::seed_from_u64(seed);
    s.image_after_power_loss(|_| rng.random::<u8>() < keep)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PHEAP_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64)
    ))]

    /// The heap on the simulated disk against the model: inserts, removes, commits of both
    /// durabilities, pipelined (group) commits, aborts, checkpoints, compactions, held
    /// snapshots, closes, process crashes, power losses of every kind, and full disks.
    #[test]
    fn heap_matches_model_through_crashes(ops in prop::collection::vec(sim_ops(), 1..120)) {
        Harness::on_sim_disk().run(ops);
    }

    /// The same harness on real files: the reopened heap must equal the last commit, non-durable
    /// ones included (the machine did not restart), and closing trims the file.
    #[test]
    fn file_heap_matches_model(ops in prop::collection::vec(file_ops(), 1..150)) {
        Harness::on_file().run(ops);
    }
}

/// A fixed workload; records the model after each acknowledged commit (and whether durable) and
/// the model of the commit in flight, stopping at the first error, which it returns.
fn workload(
    heap: &Heap,
    acked: &mut Vec<(Model, bool)>,
    in_flight: &mut Option<Model>,
) -> crate::Result<()> {
    let mut model = acked.last().map(|a| a.0.clone()).unwrap_or_default();
    for round in 0..6u32 {
        let mut tx = heap.begin_write()?;
        for i in 0..40u32 {
            let k = format!("k{}", (i * 7 + round * 13) % 60).into_bytes();
            if i % 5 == 4 {
                tx.remove(&k)?;
                model.remove(&k);
            } else {
                let v = value(if i == 3 { 70_000 } else { 20 + i * 3 }, round as u8);
                tx.insert(&k, &v)?;
                model.insert(k, Val::plain(&v));
            }
        }
        let durable = round % 2 == 0;
        tx.set_durability(if durable { Durability::Immediate } else { Durability::None });
        *in_flight = Some(model.clone());
        tx.commit()?;
        acked.push((model.clone(), durable));
        if round == 4 {
            heap.checkpoint()?;
            acked.last_mut().unwrap().1 = true;
        }
        *in_flight = None;
    }
    Ok(())
}

#[test]
fn every_io_failure_is_an_error_and_loses_nothing_acknowledged() {
    // Count the operations of a clean run.
    let (s, heap) = new_mem(boot(0));
    let base = s.ops();
    workload(&heap, &mut Vec::new(), &mut None).unwrap();
    let total = s.ops() - base;
    assert!(total > 20);
    for k in 0..total {
        for persistent in [false, true] {
            let (s, heap) = new_mem(boot(0));
            let at = s.ops() + k;
            s.set_fail(Some(FailPlan { at, persistent, syncs_only: false, kind: FailKind::Eio }));
            let mut acked = vec![(Model::new(), true)];
            let mut in_flight = None;
            let Err(err) = workload(&heap, &mut acked, &mut in_flight) else {
                // Hash seeds differ per heap, so the op count varies a little between runs.
                assert!(s.fail_pending(), "an injected failure at op {at} went unnoticed");
                continue;
            };
            assert!(matches!(err, Error::Io(_) | Error::Poisoned | Error::TxnFailed), "{err:?}");
            if heap.begin_read().is_err() {
                // Poisoned handles stay poisoned.
                assert!(matches!(heap.begin_write(), Err(Error::Poisoned)));
            }
            let acceptable = |got: &Model, from: usize| {
                acked[from..].iter().any(|a| a.0 == *got) || in_flight.as_ref() == Some(got)
            };
            drop(heap);
            // The process dies now: what it wrote is in the page cache.
            s.set_fail(None);
            let crashed = Arc::new(s.crash_clone());
            let reopened = open_mem(&crashed, boot(0)).unwrap();
            let got = contents(&reopened);
            // After a failed sync the heap forgets what was not known synced (I13).
            let last_durable = acked.iter().rposition(|a| a.1).unwrap();
            assert!(
                acceptable(&got, acked.len() - 1) || acceptable(&got, last_durable),
                "k={k}: reopened state is neither the last acknowledged nor the in-flight commit, nor the last durable one"
            );
            reopened.check().unwrap();
            // Or the machine loses power: synced data survives, and any subset of the rest.
            let last_durable = acked.iter().rposition(|a| a.1).unwrap();
            for seed in 0..4u64 {
                // Seed 0: nothing unsynced survives; the others keep about two writes in three.
                let img = power_loss(&s, seed, if seed == 0 { 0 } else { 171 });
                let cold = Arc::new(MemStorage::from_image(&img, CAP));
                let reopened = open_mem(&cold, boot(1)).unwrap();
                let got = contents(&reopened);
                if !acceptable(&got, last_durable) {
                    eprintln!(
                        "DBG k={k} persistent={persistent} err={err:?} acked={:?} got={} inflight={:?} seed={seed}",
                        acked.iter().map(|a| (a.0.len(), a.1)).collect::<Vec<_>>(),
                        got.len(),
                        in_flight.as_ref().map(|m| m.len())
                    );
                }
                assert!(acceptable(&got, last_durable), "k={k}: power loss lost a durable commit");
                reopened.check().unwrap();
            }
        }
    }
}

#[test]
fn small_durable_commits_sync_once() {
    let (s, heap) = new_mem(boot(0));
    let commit = |k: &[u8], d: Durability| {
        let mut tx = heap.begin_write().unwrap();
        tx.insert(k, [7u8; 150]).unwrap();
        tx.set_durability(d);
        let before = s.syncs();
        tx.commit().unwrap();
        s.syncs() - before
    };
    // The first write of a session syncs once to settle the heap it found; skip it.
    commit(b"warm-up", Durability::Immediate);
    for i in 0..50u32 {
        assert_eq!(
            commit(&i.to_le_bytes(), Durability::Immediate),
            1,
            "one sync on a durable base"
        );
    }
    assert_eq!(commit(b"fast", Durability::None), 0);
    // The non-durable commit's writes are listed too (DESIGN §4.3): still one sync.
    assert_eq!(commit(b"after fast", Durability::Immediate), 1, "one sync on a non-durable base");
    assert_eq!(commit(b"again", Durability::Immediate), 1);
    // A large commit writes too much to list: two syncs.
    let mut tx = heap.begin_write().unwrap();
    for i in 0..5000u32 {
        tx.insert((i + 1_000_000).to_le_bytes(), [1u8; 100]).unwrap();
    }
    let before = s.syncs();
    tx.commit().unwrap();
    assert_eq!(s.syncs() - before, 2);
    heap.check().unwrap();
}

#[test]
fn one_phase_commit_torn_by_power_loss_is_detected() {
    let mut rejected = 0;
    for seed in 0..200u64 {
        let (s, heap) = new_mem(boot(0));
        let mut tx = heap.begin_write().unwrap();
        tx.insert(b"base", b"durable").unwrap();
        tx.commit().unwrap();
        let mut tx = heap.begin_write().unwrap();
        for i in 0..20u32 {
            tx.insert(i.to_le_bytes(), [i as u8; 300]).unwrap();
        }
        let syncs = s.syncs();
        // Fail the commit's one sync: its writes and its meta slot are all unsynced.
        s.set_fail(Some(FailPlan {
            at: syncs,
            persistent: false,
            syncs_only: true,
            kind: FailKind::Eio,
        }));
        assert!(tx.commit().is_err());
        assert_eq!(s.syncs() - syncs, 1, "a one-phase commit");
        let img = power_loss(&s, seed, 128);
        drop(heap);
        let cold = Arc::new(MemStorage::from_image(&img, CAP));
        let reopened = open_mem(&cold, boot(1)).unwrap();
        let got = contents(&reopened);
        let base: Model = [(b"base".to_vec(), Val::plain(b"durable"))].into();
        if got == base {
            rejected += 1;
        } else {
            assert_eq!(got.len(), 21, "seed {seed}: a partial commit was accepted");
        }
        reopened.check().unwrap();
    }
    assert!(rejected > 100, "torn commits should mostly be rejected: {rejected}");
}

#[test]
fn failed_sync_poisons_until_reopen() {
    let (s, heap) = new_mem(boot(0));
    let mut tx = heap.begin_write().unwrap();
    tx.insert(b"a", b"1").unwrap();
    tx.commit().unwrap();
    let mut tx = heap.begin_write().unwrap();
    tx.insert(b"b", b"2").unwrap();
    // The next op is the data sync of the durable commit.
    s.set_fail(Some(FailPlan {
        at: s.ops() + 2,
        persistent: false,
        syncs_only: false,
        kind: FailKind::Eio,
    }));
    let ops_before = s.ops();
    let err = tx.commit().unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err:?}");
    assert!(s.ops() > ops_before);
    assert!(matches!(heap.begin_read(), Err(Error::Poisoned)));
    assert!(matches!(heap.begin_write(), Err(Error::Poisoned)));
    assert!(matches!(heap.stats(), Err(Error::Poisoned)));
    let reopened = open_mem(&Arc::new(s.crash_clone()), boot(0)).unwrap();
    let m = contents(&reopened);
    assert_eq!(m.get(&b"a"[..]), Some(&Val::plain(b"1")));
    reopened.check().unwrap();
}

#[test]
fn full_disk_is_a_clean_error() {
    let img = new_heap_image(&boot(0)).unwrap();
    let s = Arc::new(MemStorage::from_image(&img, 8 << 20));
    let heap = open_mem(&s, boot(0)).unwrap();
    let mut tx = heap.begin_write().unwrap();
    tx.insert(b"kept", b"safe").unwrap();
    tx.commit().unwrap();
    let mut tx = heap.begin_write().unwrap();
    let big = vec![7u8; 1 << 20];
    let mut err = None;
    for i in 0..64u32 {
        if let Err(e) = tx.insert(i.to_le_bytes(), &big) {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("the disk fills up");
    assert!(matches!(&err, Error::Io(e) if e.raw_os_error() == Some(libc::ENOSPC)), "{err:?}");
    assert!(matches!(tx.insert(b"x", b"y"), Err(Error::TxnFailed)));
    drop(tx);
    // The heap is not poisoned: it goes on at its last commit.
    let m = contents(&heap);
    assert_eq!(m.len(), 1);
    let mut tx = heap.begin_write().unwrap();
    tx.insert(b"more", b"fits").unwrap();
    tx.commit().unwrap();
    heap.check().unwrap();
}

/// The pin protocol (I4): a reader that chose its snapshot, then lost the race to two commits
/// (the second reusing space the first freed) before it published its pin, must notice and move
/// to the latest commit instead of reading reused space.
#[test]
fn a_reader_that_pins_late_moves_to_the_latest_commit() {
    let (_s, heap) = new_mem(boot(1));
    let put = |h: &Heap, v: u8| {
        let mut tx = h.begin_write().unwrap();
        tx.insert(b"k", [v; 100]).unwrap();
        tx.commit().unwrap();
    };
    put(&heap, b'o');
    let h2 = heap.clone();
    crate::txn::BEFORE_PIN.set(Some(Box::new(move || {
        put(&h2, b'a');
        put(&h2, b'b');
    })));
    let rx = heap.begin_read().unwrap();
    assert_eq!((rx.txn_id(), rx.get(b"k").unwrap()), (3, Some(&[b'b'; 100][..])));
    drop(rx);
    heap.check().unwrap();
}

/// Regression (found by the `ops_crash` fuzz target): a sync after a write that a later
/// truncation cut must apply the operations in order, not index past the new length.
#[test]
fn the_simulated_disk_syncs_a_write_then_a_truncation() {
    use crate::storage::Storage;
    use crate::storage::mem::CrashKind;
    let s = MemStorage::new(1 << 20);
    s.grow(3 * 4096).unwrap();
    s.write(2 * 4096, &[7; 100]).unwrap();
    s.truncate(4096).unwrap();
    s.sync().unwrap();
    assert_eq!(s.crash_image(CrashKind::DurableOnly, 0).len(), 4096);
    s.grow(2 * 4096).unwrap();
    s.sync().unwrap();
    let img = s.crash_image(CrashKind::DurableOnly, 0);
    assert_eq!(img.len(), 2 * 4096);
    assert!(img[4096..].iter().all(|&b| b == 0), "the cut write came back");
}

/// An opener that reaches a heap while a copy replaces it waits on the join lock, then finds its
/// name leading to the new file and opens that: never the replaced one, whose commits nobody
/// would see again (DESIGN §5.8).
#[test]
fn an_open_racing_a_replacement_ends_on_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, new) = (dir.path().join("h.pheap"), dir.path().join("new.pheap"));
    for (p, v) in [(&path, b"old"), (&new, b"new")] {
        let heap = Heap::open(p).unwrap();
        let mut tx = heap.begin_write().unwrap();
        tx.insert(b"which", v).unwrap();
        tx.commit().unwrap();
    }
    let guard = crate::storage::registry::hold_for_replacing(&path).unwrap();
    let opener = {
        let path = path.clone();
        std::thread::spawn(move || {
            let heap = Heap::open(&path).unwrap();
            let rx = heap.begin_read().unwrap();
            rx.get(b"which").unwrap().map(<[u8]>::to_vec)
        })
    };
    // Let the opener open the old file and block on its join lock.
    std::thread::sleep(std::time::Duration::from_millis(200));
    std::fs::rename(&new, &path).unwrap();
    drop(guard);
    assert_eq!(opener.join().unwrap().as_deref(), Some(&b"new"[..]));
}

/// Regression (tests/space.rs's compaction test failed about once in a hundred runs, its hash
/// seed random): the file ended at 1.4x its live bytes instead of 1.2x. Two causes: a node copied
/// because a child moved was placed by the allocator's usual rule, so in the last round it could
/// take a new span at the file's end, where it stayed (copies now go below the limit, like moved
/// records); and four rounds were not always enough, records that found no room below the limit
/// in one round moving only in the next (rounds now go on, up to eight, while anything is left
/// past the limit). Hash seed 96 of this workload failed before; `SEEDS=150` runs seeds 0..150,
/// all of which pass.
#[test]
fn compaction_leaves_no_copied_node_at_the_tail() {
    use rand::Rng;
    let seeds: Vec<u128> = match std::env::var("SEEDS") {
        Ok(n) => (0..n.parse().unwrap()).collect(),
        Err(_) => vec![96, 100],
    };
    for seed in seeds {
        let img = crate::meta::new_heap_image_seeded(&boot(0), (seed * 7919 + 1).to_le_bytes());
        let s = Arc::new(MemStorage::from_image(&img, 256 << 20));
        let heap = open_mem(&s, boot(0)).unwrap();
        let mut x = SmallRng::seed_from_u64(0x1234_5678_9abc_def1);
        let mut tx = heap.begin_write().unwrap();
        for k in 0..60_000u64 {
            let large = if k % 1000 == 0 { 70_000 } else { 0 };
            let v = vec![k as u8; x.random_range(0..600) + large];
            tx.insert(k.to_be_bytes(), &v).unwrap();
        }
        tx.commit().unwrap();
        // Two keys in three removed: holes in every span, the tail included.
        for chunk in (0..60_000u64).filter(|k| k % 3 != 0).collect::<Vec<_>>().chunks(5000) {
            let mut tx = heap.begin_write().unwrap();
            for k in chunk {
                tx.remove(k.to_be_bytes()).unwrap();
            }
            tx.commit().unwrap();
        }
        heap.compact().unwrap();
        let st = heap.stats().unwrap();
        assert!(
            st.file_size <= st.live_bytes * 11 / 10 + (2 << 20),
            "seed {seed}: file {} for {} live bytes",
            st.file_size,
            st.live_bytes
        );
        heap.check().unwrap();
    }
}

/// The leaf of `key` of leaf kind `kind` in `img` (built in one transaction, so there is one).
fn find_leaf(img: &[u8], key: &[u8], kind: u16) -> usize {
    use crate::format::{DATA_START, LeafHeader};
    use zerocopy::FromBytes;
    (DATA_START as usize..img.len() - 64)
        .step_by(8)
        .find(|&o| {
            let h = LeafHeader::read_from_bytes(&img[o..o + 16]).unwrap();
            h.kind.get() == kind
                && h.key_len.get() as usize == key.len()
                && &img[o + 16..o + 16 + key.len()] == key
        })
        .expect("the leaf")
}

/// The value region of the leaf at `o`.
fn leaf_value(img: &[u8], o: usize) -> (usize, usize) {
    use crate::format::{LeafHeader, round8};
    use zerocopy::FromBytes;
    let h = LeafHeader::read_from_bytes(&img[o..o + 16]).unwrap();
    let at = o + 16 + round8(h.key_len.get() as u64) as usize;
    (at, h.val_len.get() as usize)
}

/// Replace the value region of the leaf at `o` (same length), its checksum made to match: a
/// forgery only the structure's own checks can catch.
fn forge_value(img: &mut [u8], o: usize, region: &[u8]) {
    use crate::format::{LeafHeader, leaf_checksum};
    use zerocopy::{FromBytes, IntoBytes};
    let mut h = LeafHeader::read_from_bytes(&img[o..o + 16]).unwrap();
    let (at, len) = leaf_value(img, o);
    assert_eq!(len, region.len());
    img[at..at + len].copy_from_slice(region);
    let key = img[o + 16..o + 16 + h.key_len.get() as usize].to_vec();
    h.checksum = leaf_checksum(h.kind.get(), h.flags.get(), &key, region).into();
    img[o..o + 16].copy_from_slice(h.as_bytes());
}

#[test]
fn forged_maps_that_share_or_cycle_and_parts_out_of_bounds_are_errors() {
    use crate::format::{LEAF_KIND_BYTES, LEAF_KIND_MAP, PARTS_HEADER_SIZE};
    let (s, heap) = new_mem(boot(0));
    let mut tx = heap.begin_write().unwrap();
    for name in ["map-a", "map-b"] {
        let mut m = tx.map_mut(name).unwrap();
        for i in 0..200u32 {
            m.insert(format!("{name}-{i}"), [i as u8; 24]).unwrap();
        }
    }
    tx.map_mut("map-a").unwrap().map_mut("inner-map").unwrap().insert("x", "y").unwrap();
    tx.insert_parts("parts", crate::Kind::Bytes, b"head", &[&[9u8; 5000][..], &[8u8; 300][..]])
        .unwrap();
    tx.commit().unwrap();
    heap.checkpoint().unwrap();
    heap.check().unwrap();
    let img = s.image_after_power_loss(|_| true);
    drop(heap);
    let a = find_leaf(&img, b"map-a", LEAF_KIND_MAP);
    let b = find_leaf(&img, b"map-b", LEAF_KIND_MAP);
    let inner = find_leaf(&img, b"inner-map", LEAF_KIND_MAP);
    let parts = find_leaf(&img, b"parts", LEAF_KIND_BYTES);
    let a_value = {
        let (at, len) = leaf_value(&img, a);
        img[at..at + len].to_vec()
    };
    let open = |img: &[u8]| open_mem(&Arc::new(MemStorage::from_image(img, CAP)), boot(0)).unwrap();
    let corrupt = |what: &str, r: crate::Result<()>| match r {
        Err(Error::Corrupt { .. } | Error::NestingTooDeep { .. }) => {}
        other => panic!("{what}: expected a corruption error, got {other:?}"),
    };

    // One subtree referenced twice: "map-b" names "map-a"'s tree.
    let mut shared = img.clone();
    forge_value(&mut shared, b, &a_value);
    let h = open(&shared);
    corrupt("walk of a shared subtree", h.check().map(|_| ()));
    let mut tx = h.begin_write().unwrap();
    let r = tx.remove("map-a").and_then(|_| tx.remove("map-b")).and_then(|_| tx.commit());
    corrupt("freeing a shared subtree twice", r);
    drop(h);
    corrupt("the heap after the refused commit", open(&shared).check().map(|_| ()));

    // A map reachable from itself: "inner-map" names "map-a", which holds it.
    let mut cyclic = img.clone();
    forge_value(&mut cyclic, inner, &a_value);
    let h = open(&cyclic);
    corrupt("walk of a cycle", h.check().map(|_| ()));
    corrupt("compaction of a cycle", h.compact_with(true).map(|_| ()));
    let mut tx = h.begin_write().unwrap();
    corrupt("freeing a cycle", tx.remove("map-a").map(|_| ()));
    drop(tx);
    let dir = tempfile::tempdir().unwrap();
    corrupt("copy of a cycle", h.copy_to(dir.path().join("copy")).map(|_| ()));
    corrupt("prefetch of a cycle", h.begin_read().unwrap().prefetch().map(|_| ()));
    drop(h);

    // A part past the end of the file, and a part over another record.
    let (at, _) = leaf_value(&img, parts);
    let ref_at = at + PARTS_HEADER_SIZE as usize;
    for (what, rec) in [("past the end", CAP << 4), ("over a node", a_value_root(&a_value))] {
        let mut forged = img.clone();
        let (_, len) = leaf_value(&forged, parts);
        let mut region = forged[at..at + len].to_vec();
        region[ref_at - at..ref_at - at + 8].copy_from_slice(&rec.to_le_bytes());
        forge_value(&mut forged, parts, &region);
        let h = open(&forged);
        corrupt(what, h.check().map(|_| ()));
        let rx = h.begin_read().unwrap();
        let read = rx
            .get_value("parts")
            .and_then(|v| v.expect("present").parts().collect::<crate::Result<Vec<_>>>());
        if what == "past the end" {
            corrupt("a read of a part past the end", read.map(|_| ()));
        }
    }

    // A part table whose count disagrees with its length, and a map leaf whose root is not a
    // node: both refused on read.
    let mut forged = img.clone();
    let (_, len) = leaf_value(&forged, parts);
    let mut region = forged[at..at + len].to_vec();
    region[..4].copy_from_slice(&7u32.to_le_bytes());
    forge_value(&mut forged, parts, &region);
    let h = open(&forged);
    corrupt(
        "a part table of the wrong count",
        h.begin_read().unwrap().get_value("parts").map(|_| ()),
    );
    corrupt("the walk of it", h.check().map(|_| ()));
    let mut forged = img.clone();
    let mut region = a_value.clone();
    region[..8].copy_from_slice(&(a_value_root(&a_value) + 8).to_le_bytes());
    forge_value(&mut forged, a, &region);
    let h = open(&forged);
    let rx = h.begin_read().unwrap();
    corrupt("a map whose root is no node", rx.map("map-a").unwrap().unwrap().get("x").map(|_| ()));
    corrupt("the walk of it", h.check().map(|_| ()));
}

/// The root offset a [`crate::format::MapValue`] region names.
fn a_value_root(region: &[u8]) -> u64 {
    u64::from_le_bytes(region[..8].try_into().unwrap())
}

/// A map whose recorded entry count is not what its trie holds: a walk of the whole map ends in
/// `Corrupt` (DESIGN §2.6.3), whether the count is short or long; a partition (whose length no
/// record gives) and a lookup read on.
#[test]
fn a_walk_checks_the_entry_count_the_map_records() {
    use crate::format::LEAF_KIND_MAP;
    let (s, heap) = new_mem(boot(0));
    let mut tx = heap.begin_write().unwrap();
    let mut m = tx.map_mut("m").unwrap();
    for i in 0..200u32 {
        m.insert(i.to_le_bytes(), b"v").unwrap();
    }
    tx.commit().unwrap();
    heap.checkpoint().unwrap();
    let img = s.image_after_power_loss(|_| true);
    drop(heap);
    let leaf = find_leaf(&img, b"m", LEAF_KIND_MAP);
    let (at, len) = leaf_value(&img, leaf);
    for entries in [199u64, 201] {
        let mut region = img[at..at + len].to_vec();
        region[8..16].copy_from_slice(&entries.to_le_bytes());
        let mut forged = img.clone();
        forge_value(&mut forged, leaf, &region);
        let h = open_mem(&Arc::new(MemStorage::from_image(&forged, CAP)), boot(0)).unwrap();
        let rx = h.begin_read().unwrap();
        let m = rx.map("m").unwrap().unwrap();
        assert_eq!(m.len().unwrap(), entries as usize, "len() is the record");
        let last = m.iter().last().unwrap();
        assert!(matches!(last, Err(Error::Corrupt { .. })), "{entries}: the walk ends {last:?}");
        assert_eq!(m.iter().filter(|r| r.is_ok()).count(), 200.min(entries as usize));
        let parts: usize =
            (0..4).map(|i| m.iter_partition(i, 4).filter(|r| r.is_ok()).count()).sum();
        assert_eq!(parts, 200, "partitions are not checked against the count");
        assert_eq!(m.get(7u32.to_le_bytes()).unwrap(), Some(&b"v"[..]));
    }
}

/// Writers of two handles (two processes, as far as the lock file knows) taking turns: a writer
/// that finds the latest commit left settled by the last holder (everything it wrote synced,
/// `settled_txn` in the lock file, DESIGN §5.5) builds on it without a settling sync; after a
/// non-durable commit, an abort, or a holder that died, it settles as before.
#[test]
fn writers_in_turn_settle_only_what_was_left_unsynced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("turns.pheap");
    let a = Heap::open(&path).unwrap();
    let b = Heap::open(&path).unwrap();
    let commit = |h: &Heap, k: &str, d: Durability| {
        let mut tx = h.begin_write().unwrap();
        tx.insert(k, b"v").unwrap();
        tx.set_durability(d);
        tx.commit().unwrap();
    };
    commit(&a, "a0", Durability::Immediate);
    let before = b.settles();
    commit(&b, "b0", Durability::Immediate);
    commit(&a, "a1", Durability::Immediate);
    commit(&b, "b1", Durability::Immediate);
    assert_eq!(b.settles(), before, "durable commits in turn need no settling");
    commit(&a, "a2", Durability::None);
    commit(&b, "b2", Durability::Immediate);
    assert_eq!(b.settles(), before + 1, "after a non-durable commit the next writer settles");
    drop(a.begin_write().unwrap()); // an aborted transaction: it may have written
    commit(&b, "b3", Durability::Immediate);
    assert_eq!(b.settles(), before + 2, "after an abort the next writer settles");
    // A holder clears the mark when it takes the lock, so one that dies holding it (killed in
    // `processes.rs`) leaves nothing settled: the abort above is the same case.
    drop(a);
    let c = Heap::open(&path).unwrap();
    let before = c.settles();
    commit(&c, "c0", Durability::Immediate);
    assert_eq!(c.settles(), before, "b left its last commit settled");
    let rx = c.begin_read().unwrap();
    for k in ["a0", "a1", "a2", "b0", "b1", "b2", "b3", "c0"] {
        assert!(rx.get(k).unwrap().is_some(), "{k}");
    }
}

/// DESIGN §4.3: while a commit of a handle is staged (its sync still to come), the handle keeps
/// the writer lock, so no other handle or process builds on a commit that may yet fail; it goes
/// once the staged commit is synced.
#[test]
fn a_staged_commit_keeps_the_writer_lock_until_it_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("staged.pheap");
    let a = Heap::open(&path).unwrap();
    let b = Heap::open(&path).unwrap();
    let mut tx = a.begin_write().unwrap();
    tx.insert(b"k", b"v").unwrap();
    let staged = tx.commit_pending().unwrap();
    assert!(matches!(b.try_begin_write(), Err(Error::WriteInProgress)));
    staged.wait().unwrap();
    let tx = b.try_begin_write().expect("the lock is free once the staged commit is synced");
    assert_eq!(tx.get(b"k").unwrap(), Some(&b"v"[..]));
}

/// Walks into nested maps recurse: at the deepest nesting a heap may hold, compaction needed
/// between 512 KiB and 1 MiB of stack in a release build and a rebuilt copy (`seal_to`) more
/// than 256 KiB, so on a thread of a small stack they overflowed and aborted the process (and
/// the forged-cycle test above overflowed the 2 MiB test thread in a debug build). Every
/// operation that walks the whole heap, on a thread of 128 KiB.
///
/// The outermost map also holds 2 MiB of its own values, removed before compacting: compaction
/// moves records only when the file ends past a tenth more than its live bytes, and the
/// outermost map's 300 small entries alone (about 1/250 of the data) left that to the heap's
/// random hash seed (about one seed in fifteen moved nothing and failed the test).
#[test]
fn the_deepest_nesting_is_walked_on_a_small_stack() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.pheap");
    let heap = Heap::open(&path).unwrap();
    fn fill(m: &mut crate::txn::MapMut<'_>, level: usize) {
        for i in 0..300 {
            m.insert(format!("k{i}"), [level as u8; 40]).unwrap();
        }
        if level == 2 {
            for i in 0..2048 {
                m.insert(format!("big{i}"), [0u8; 1024]).unwrap();
            }
        }
        if level < crate::MAX_NESTING {
            fill(&mut m.map_mut(format!("m{level}")).unwrap(), level + 1);
        }
    }
    let mut tx = heap.begin_write().unwrap();
    fill(&mut tx.map_mut("m1").unwrap(), 2);
    tx.commit().unwrap();
    let walks = std::thread::Builder::new().stack_size(128 << 10);
    walks
        .spawn(move || {
            heap.check().unwrap();
            let copy = heap.copy_to(path.with_file_name("copy.pheap")).unwrap();
            let sealed = heap.seal_to(path.with_file_name("sealed.pheap")).unwrap();
            assert_eq!(copy.entries, sealed.entries);
            // Empty the outermost map's own entries, so compaction moves the deeper ones down.
            let mut tx = heap.begin_write().unwrap();
            let mut m1 = tx.map_mut("m1").unwrap();
            for i in 0..300 {
                m1.remove(format!("k{i}")).unwrap();
            }
            for i in 0..2048 {
                m1.remove(format!("big{i}")).unwrap();
            }
            drop(m1);
            tx.commit().unwrap();
            let stats = heap.compact_with(true).unwrap();
            assert!(stats.moved_bytes > 0, "{stats:?}");
            heap.check().unwrap();
            let tx = heap.begin_read().unwrap();
            let mut m = tx.map("m1").unwrap().unwrap();
            for level in 2..crate::MAX_NESTING {
                m = m.map(format!("m{level}")).unwrap().unwrap();
            }
            assert_eq!(m.get("k7").unwrap(), Some(&[crate::MAX_NESTING as u8; 40][..]));
        })
        .unwrap()
        .join()
        .unwrap();
}

/// A durable commit's writes go through the file, not the mapping (DESIGN §4.3a): its first 64
/// writes of at most 16 KiB, so a transaction that writes more stores the rest into the
/// mapping; a commit that does not sync writes nothing through the file, nor does a transaction
/// switched to no sync before it writes.
#[test]
fn durable_commits_write_through_the_file_and_others_through_the_mapping() {
    let (s, heap) = new_mem(boot(0));
    let writes = || s.syscall_writes().0;
    let commit = |durability: Durability, keys: u32| {
        let mut tx = heap.begin_write().unwrap();
        tx.set_durability(durability);
        for k in 0..keys {
            tx.insert(k.to_le_bytes(), value(100, k as u8)).unwrap();
        }
        tx.commit().unwrap();
    };
    commit(Durability::Immediate, 1);
    let one = writes();
    assert!(one >= 3, "a single-key durable commit made {one} writes through the file");
    commit(Durability::None, 1);
    commit(Durability::None, 500);
    assert_eq!(writes(), one, "a commit that does not sync wrote through the file");
    commit(Durability::Immediate, 2_000);
    assert_eq!(writes() - one, 64, "a large durable transaction's first writes only");
    // A long value is stored into the mapping even in a small durable commit.
    let mut tx = heap.begin_write().unwrap();
    tx.insert(b"long", value(40_000, 1)).unwrap();
    tx.commit().unwrap();
    assert!(s.syscall_writes().1 <= 16 << 10, "a write of {} bytes", s.syscall_writes().1);
    let rx = heap.begin_read().unwrap();
    assert_eq!(rx.get(b"long").unwrap(), Some(&value(40_000, 1)[..]));
    assert_eq!(rx.get(1999u32.to_le_bytes()).unwrap(), Some(&value(100, 1999u32 as u8)[..]));
    drop(rx);
    heap.check().unwrap();
    // A heap whose commits do not sync by default: nothing through the file, until a
    // transaction asks for a sync.
    let s = Arc::new(MemStorage::from_image(&new_heap_image(&boot(0)).unwrap(), CAP));
    let mut opts = Heap::options();
    opts.durability(Durability::None);
    let registry = crate::storage::registry::Registry::private().unwrap();
    let path = std::path::Path::new("sim");
    let heap = Heap::from_storage_with_boot(s.clone(), registry, &opts, path, boot(0)).unwrap();
    let mut tx = heap.begin_write().unwrap();
    tx.insert(b"k", b"v").unwrap();
    tx.commit().unwrap();
    assert_eq!(s.syscall_writes().0, 0, "a no-sync heap's commit wrote through the file");
    let mut tx = heap.begin_write().unwrap();
    tx.set_durability(Durability::Immediate);
    tx.insert(b"k", b"w").unwrap();
    tx.commit().unwrap();
    assert!(s.syscall_writes().0 > 0, "a commit asked to sync wrote nothing through the file");
}
