//! Enumerated crash points: seeded random workloads on the simulated disk; at every I/O
//! operation the "process" stops, and four crash images are taken (durable only, a random subset
//! of the unsynced writes, the last write torn at 512 bytes, growth lost). Every image must open
//! (after a reboot: a new boot id), pass the integrity walk, and hold exactly the state of some
//! commit between the last acknowledged durable one and the one in flight. A share of them crash
//! a second time, during the first commit after recovery. Also: every failure kind at every
//! operation.
//!
//! `PHEAP_CRASH_WORKLOADS=2000 cargo test --release --lib enumerated` for the long mode.

use crate::{Readable, Writable};
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::meta::new_heap_image_seeded;
use crate::storage::mem::{CrashKind, FailKind, FailPlan, MemStorage};
use crate::testkit::{CAP, History, Model, Val, contents, model_map, open_mem as open};
use crate::{Durability, Error, Heap};

/// Boot ids (never all zeros, which means "unknown").
fn boot(n: u8) -> [u8; 16] {
    crate::testkit::boot_id(n.into())
}

/// 50 to 300 random operations: inserts (some large), inserts into sub-maps one and two levels
/// down, values of several parts (one of 1 MiB now and then), removes of keys and of whole
/// sub-maps, commits of both durabilities, pipelined durable commits (group commit, some meeting
/// a full disk while a commit is staged), aborts, checkpoints, compactions. Stops at the first
/// error (but a full disk it arranged itself).
fn workload(disk: &MemStorage, heap: &Heap, seed: u64, log: &mut History) -> crate::Result<()> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let ops = 50 + rng.random_range(0..251);
    let mut model = log.latest().clone();
    let mut tx = None;
    // One workload in eight writes one value with a 1 MiB part (once: each replays the whole
    // workload for every crash point, so they are the expensive ones).
    let mut big_left = seed.is_multiple_of(8);
    for _ in 0..ops {
        if tx.is_none() {
            tx = Some((heap.begin_write()?, model.clone()));
        }
        let (t, m) = tx.as_mut().expect("open");
        match rng.random_range(0..100) {
            40..48 => {
                // Into a sub-map, one or two levels down.
                let mut path = vec![format!("m{}", rng.random_range(0..3)).into_bytes()];
                if rng.random::<bool>() {
                    path.push(format!("n{}", rng.random_range(0..2)).into_bytes());
                }
                let k = format!("k{}", rng.random_range(0..16)).into_bytes();
                let v = vec![rng.random::<u8>(); rng.random_range(0..300)];
                t.map_mut_path(&path)?.insert(&k, &v)?;
                model_map(m, &path).expect("map names never hold bytes").insert(k, Val::plain(&v));
            }
            48..52 => {
                // A value of several parts, one of them 1 MiB now and then, in a sub-map.
                let path = [format!("m{}", rng.random_range(0..3)).into_bytes()];
                let k = format!("p{}", rng.random_range(0..4)).into_bytes();
                let big = if std::mem::take(&mut big_left) { 1 << 20 } else { 5000 };
                let parts = vec![vec![rng.random::<u8>(); big], vec![rng.random::<u8>(); 40]];
                let refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
                let kind = crate::Kind::Tagged(7);
                t.map_mut_path(&path)?.insert_parts(&k, kind, b"inline", &refs)?;
                model_map(m, &path)
                    .expect("map names never hold bytes")
                    .insert(k, Val::of(kind, b"inline", &parts));
            }
            52..55 => {
                // A whole sub-map goes, with everything in it.
                let k = format!("m{}", rng.random_range(0..3)).into_bytes();
                t.remove(&k)?;
                m.remove(&k);
            }
            0..40 => {
                let k = format!("k{}", rng.random_range(0..48)).into_bytes();
                let len = if rng.random_range(0..40) == 0 {
                    66_000 + rng.random_range(0..9000)
                } else {
                    rng.random_range(0..400)
                };
                let v = vec![rng.random::<u8>(); len];
                t.insert(&k, &v)?;
                m.insert(k, Val::plain(&v));
            }
            55..72 => {
                let k = format!("k{}", rng.random_range(0..48)).into_bytes();
                t.remove(&k)?;
                m.remove(&k);
            }
            72..77 => {
                // Group commit on one thread (DESIGN §4.3): this transaction staged, a second one
                // on top of it staged too, then both waited for (one sync for both). One time in
                // three the second writes 300 KiB and meets a full disk (its growth fails with
                // ENOSPC, which poisons nothing): it fails, and the first is synced all the same.
                let (t, m) = tx.take().expect("open");
                log.begin(&m);
                let first = t.commit_pending()?;
                let k = format!("k{}", rng.random_range(0..48)).into_bytes();
                let v = vec![rng.random::<u8>(); rng.random_range(0..400)];
                let full = rng.random_range(0..3) == 0;
                let big = vec![rng.random::<u8>(); 300_000];
                let mut second = m.clone();
                second.insert(k.clone(), Val::plain(&v));
                if full {
                    second.insert(b"big".to_vec(), Val::plain(&big));
                    disk.fail_growth(Some(0));
                }
                log.begin_pipelined(&second);
                let res = heap.begin_write().and_then(|mut t2| {
                    t2.insert(&k, &v)?;
                    if full {
                        t2.insert(b"big", &big)?;
                    }
                    t2.commit_pending()
                });
                disk.fail_growth(None);
                first.wait()?;
                log.pipelined.clear();
                log.acknowledge(m.clone(), true);
                model = m;
                match res {
                    Ok(p) => {
                        p.wait()?;
                        log.acknowledge(second.clone(), true);
                        model = second;
                    }
                    Err(Error::Io(e)) if full && e.raw_os_error() == Some(libc::ENOSPC) => {}
                    Err(e) => return Err(e),
                }
                log.in_flight = None;
            }
            77..92 => {
                let durable = rng.random::<bool>();
                let (mut t, m) = tx.take().expect("open");
                t.set_durability(if durable { Durability::Immediate } else { Durability::None });
                log.begin(&m);
                t.commit()?;
                log.acknowledge(m.clone(), durable);
                log.in_flight = None;
                model = m;
            }
            92..95 => drop(tx.take()),
            95..98 => {
                drop(tx.take());
                log.begin(&model);
                heap.checkpoint()?;
                log.acknowledge(model.clone(), true);
                log.in_flight = None;
            }
            _ => {
                drop(tx.take());
                log.begin(&model);
                heap.compact_with(true)?;
                // Compaction ends with durable commits of the same content.
                let s = heap.stats()?;
                log.acknowledge(model.clone(), s.durable_txn_id == s.txn_id);
                log.in_flight = None;
            }
        }
    }
    Ok(())
}

fn fresh(seed: u64) -> (Arc<MemStorage>, Heap) {
    let hash_seed = (seed.wrapping_mul(31) as u128 | 1).to_le_bytes();
    let s = Arc::new(MemStorage::from_image(&new_heap_image_seeded(&boot(0), hash_seed), CAP));
    let h = open(&s, boot(0)).unwrap();
    (s, h)
}

/// Open an image after a power loss (the machine boots as `boot_id`) and check it; returns its
/// contents.
fn verify_image(img: &[u8], boot_id: [u8; 16], log: &History, what: &str) -> Model {
    let s = Arc::new(MemStorage::from_image(img, CAP));
    let heap = open(&s, boot_id).unwrap_or_else(|e| panic!("{what}: the image does not open: {e}"));
    heap.check().unwrap_or_else(|e| panic!("{what}: integrity walk: {e}"));
    let got = contents(&heap);
    assert!(
        log.acceptable(&got, true),
        "{what}: a state no acknowledged commit had, or a durable one lost"
    );
    got
}

/// The enumeration in four tests of every fourth workload each, which the test harness runs side
/// by side (one was a single test of 430 s on one core of a two-core machine, most of CI's Rust
/// tests; the others end within two minutes).
const CRASH_PARTS: u64 = 4;

#[test]
fn enumerated_crash_images_all_open_whole_and_lose_nothing_durable_1_of_4() {
    enumerated_crash_images(0);
}

#[test]
fn enumerated_crash_images_all_open_whole_and_lose_nothing_durable_2_of_4() {
    enumerated_crash_images(1);
}

#[test]
fn enumerated_crash_images_all_open_whole_and_lose_nothing_durable_3_of_4() {
    enumerated_crash_images(2);
}

#[test]
fn enumerated_crash_images_all_open_whole_and_lose_nothing_durable_4_of_4() {
    enumerated_crash_images(3);
}

/// The workloads `w` with `w % CRASH_PARTS == part`, of `PHEAP_CRASH_WORKLOADS` (40).
fn enumerated_crash_images(part: u64) {
    let workloads: u64 =
        std::env::var("PHEAP_CRASH_WORKLOADS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    let (mut images, mut second) = (0u64, 0u64);
    for w in (0..workloads).filter(|w| w % CRASH_PARTS == part) {
        let seed = 0x5eed_0000 + w;
        // A clean run counts the operations.
        let (s, heap) = fresh(seed);
        let base = s.ops();
        workload(&s, &heap, seed, &mut History::new(Model::new())).unwrap();
        let total = s.ops() - base;
        drop(heap);
        for p in 0..=total {
            // The process stops doing I/O at operation p: everything from it on fails.
            let (s, heap) = fresh(seed);
            s.set_fail(Some(FailPlan {
                at: s.ops() + p,
                persistent: true,
                syncs_only: false,
                kind: FailKind::Eio,
            }));
            let mut log = History::new(Model::new());
            let _ = workload(&s, &heap, seed, &mut log);
            drop(heap);
            s.set_fail(None);
            for (i, kind) in [
                CrashKind::DurableOnly,
                CrashKind::RandomSubset,
                CrashKind::TornLast,
                CrashKind::GrowthLost,
            ]
            .into_iter()
            .enumerate()
            {
                let what = format!("workload {w} op {p}/{total} {kind:?}");
                let img = s.crash_image(kind, seed ^ p ^ i as u64);
                let got = verify_image(&img, boot(1), &log, &what);
                images += 1;
                if (p + i as u64).is_multiple_of(16) {
                    // A second crash, during the first commit after recovery.
                    second += 1;
                    let s2 = Arc::new(MemStorage::from_image(&img, CAP));
                    let heap = open(&s2, boot(1)).unwrap();
                    s2.set_fail(Some(FailPlan {
                        at: s2.ops() + p % 7,
                        persistent: true,
                        syncs_only: false,
                        kind: FailKind::Eio,
                    }));
                    let mut after = got.clone();
                    after.insert(b"recovered".to_vec(), Val::plain(b"yes"));
                    let r = heap.begin_write().and_then(|mut t| {
                        t.insert(b"recovered", b"yes")?;
                        t.commit()
                    });
                    drop(heap);
                    s2.set_fail(None);
                    let mut log2 = History::new(got);
                    log2.begin(&after);
                    if r.is_ok() {
                        log2.acknowledge(after, true);
                    }
                    let img2 = s2.crash_image(CrashKind::RandomSubset, p);
                    // Another power loss: another boot.
                    verify_image(&img2, boot(2), &log2, &format!("{what}, second crash"));
                    images += 1;
                }
            }
        }
    }
    eprintln!(
        "part {} of {CRASH_PARTS} of {workloads} workloads: {images} crash images ({second} after a \
         second crash)",
        part + 1
    );
}

/// Every failure kind at every operation of a workload: an error (never a panic), the handle
/// poisoned after a failed write or sync, and the heap reopened (after a process crash, and after
/// a power loss) holding an acceptable state.
#[test]
fn every_failure_kind_at_every_operation() {
    let workloads: u64 =
        std::env::var("PHEAP_FAIL_WORKLOADS").ok().and_then(|s| s.parse().ok()).unwrap_or(6);
    let mut runs = 0;
    for w in 0..workloads {
        let seed = 0xfa11_0000 + w;
        let (s, heap) = fresh(seed);
        let base = s.ops();
        workload(&s, &heap, seed, &mut History::new(Model::new())).unwrap();
        let total = s.ops() - base;
        drop(heap);
        for p in 0..total {
            for kind in [FailKind::Eio, FailKind::NoSpace, FailKind::Short, FailKind::SyncLost] {
                let (s, heap) = fresh(seed);
                s.set_fail(Some(FailPlan {
                    at: s.ops() + p,
                    persistent: false,
                    syncs_only: false,
                    kind,
                }));
                let mut log = History::new(Model::new());
                let res = workload(&s, &heap, seed, &mut log);
                runs += 1;
                let what = format!("workload {w} op {p} {kind:?}");
                if let Err(e) = &res {
                    assert!(
                        matches!(e, Error::Io(_) | Error::Poisoned | Error::TxnFailed),
                        "{what}: {e:?}"
                    );
                    // Once a write or sync failed, the handle refuses work until reopened.
                    if heap.begin_read().is_err() {
                        assert!(matches!(heap.begin_write(), Err(Error::Poisoned)), "{what}");
                    }
                }
                drop(heap);
                s.set_fail(None);
                // The process dies: the page cache holds what it wrote.
                let crashed = Arc::new(s.crash_clone());
                let reopened = open(&crashed, boot(0)).unwrap();
                reopened.check().unwrap_or_else(|e| panic!("{what}: {e}"));
                let got = contents(&reopened);
                let last = log.acked.len() - 1;
                // After a failed sync the heap forgets what was not known synced (I13): it may
                // reopen at the last durable commit.
                let rolled_back = res.is_err() && log.acceptable(&got, true);
                assert!(
                    log.acked[last].0 == got
                        || log.in_flight.as_ref() == Some(&got)
                        || log.pipelined.contains(&got)
                        || rolled_back,
                    "{what}: reopened state is neither the last acknowledged nor the in-flight one: {res:?}, {} acked, got {} entries, last {} in flight {:?}",
                    log.acked.len(),
                    got.len(),
                    log.acked[last].0.len(),
                    log.in_flight.as_ref().map(|m| m.len())
                );
                // Or the power fails.
                verify_image(&s.crash_image(CrashKind::RandomSubset, p), boot(1), &log, &what);
            }
        }
    }
    eprintln!("{workloads} workloads: {runs} failing runs");
}

/// Regression (found by the `ops_crash` fuzz target): an fsync fails and the kernel drops the
/// unsynced pages; the next process must not build durable commits on the lost commit, or a power
/// loss leaves a meta slot pointing at data that never reached the disk.
#[test]
fn a_lost_fsync_does_not_let_the_next_process_build_on_lost_pages() {
    let (s, heap) = fresh(1);
    let put = |h: &Heap, k: &[u8], durable: bool| {
        let mut t = h.begin_write()?;
        t.insert(k, [5; 3000])?;
        t.set_durability(if durable { Durability::Immediate } else { Durability::None });
        t.commit()
    };
    put(&heap, b"durable", true).unwrap();
    put(&heap, b"fast", false).unwrap();
    // The checkpoint's sync fails, and the pages written since the last sync are gone for good.
    s.set_fail(Some(FailPlan {
        at: s.syncs(),
        persistent: false,
        syncs_only: true,
        kind: FailKind::SyncLost,
    }));
    let before = s.syncs();
    let r = heap.checkpoint();
    assert!(r.is_err(), "{r:?} syncs {before} -> {}", s.syncs());
    drop(heap);
    s.set_fail(None);
    // The process dies; the next one commits durably on what it finds.
    let s2 = Arc::new(s.crash_clone());
    let heap = open(&s2, boot(0)).unwrap();
    put(&heap, b"after", true).unwrap();
    drop(heap);
    // The power fails: what opens must be whole.
    for kind in [
        CrashKind::DurableOnly,
        CrashKind::RandomSubset,
        CrashKind::TornLast,
        CrashKind::GrowthLost,
    ] {
        let s3 = Arc::new(MemStorage::from_image(&s2.crash_image(kind, 3), CAP));
        let heap = open(&s3, boot(1)).unwrap();
        heap.check().unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        let got = contents(&heap);
        assert!(got.contains_key(&b"durable"[..]), "{kind:?}: a durable commit was lost");
    }
}

/// After a failed sync discarded a commit (I13) that a reader of another handle still pins, no
/// writer may reuse the space that commit's records occupy until the reader ends.
#[test]
fn a_pin_on_a_discarded_commit_holds_writers_back() {
    use crate::storage::registry::{Mode, Registry};
    let lock = tempfile::NamedTempFile::new().unwrap();
    let registry = || {
        let f = std::fs::OpenOptions::new().read(true).write(true).open(lock.path()).unwrap();
        Registry::from_file(lock.path().into(), f, Mode::Registered).unwrap()
    };
    let on = |s: &Arc<MemStorage>| {
        let opts = crate::HeapOptions::default();
        Heap::from_storage_with_boot(
            s.clone(),
            registry(),
            &opts,
            std::path::Path::new("p"),
            boot(0),
        )
        .unwrap()
    };
    let (s, _) = fresh(2);
    let a = on(&s);
    let mut t = a.begin_write().unwrap();
    t.insert(b"k1", [1; 500]).unwrap();
    t.commit().unwrap();
    let mut t = a.begin_write().unwrap();
    t.insert(b"k2", [2; 500]).unwrap();
    t.set_durability(Durability::None);
    t.commit().unwrap();
    // A reader of another handle (as of another process) pins the non-durable commit.
    let c = on(&s);
    let rx = c.begin_read().unwrap();
    let held = rx.txn_id();
    s.set_fail(Some(FailPlan {
        at: s.syncs(),
        persistent: false,
        syncs_only: true,
        kind: FailKind::SyncLost,
    }));
    assert!(a.checkpoint().is_err());
    s.set_fail(None);
    let b = on(&s);
    assert_eq!(b.begin_read().unwrap().get(b"k2").unwrap(), None, "the commit was discarded");
    let err = b.begin_write().unwrap_err();
    assert!(matches!(err, Error::DiscardedCommitPinned { txn_id } if txn_id == held), "{err}");
    assert!(err.to_string().contains(&format!("commit {held}")), "{err}");
    assert_eq!(rx.get(b"k2").unwrap(), Some(&[2u8; 500][..]), "the pinned view is intact");
    drop(rx);
    // Once no reader holds it, the discarded commit is gone for everyone.
    let mut t = b.begin_write().unwrap();
    t.insert(b"k3", [3; 500]).unwrap();
    t.commit().unwrap();
    b.check().unwrap();
}

/// Regression (found by a longer `ops_crash` run): a sync that fails while a new process settles
/// an earlier one's commits (at its first write transaction) must not discard durable commits.
#[test]
fn a_failed_settling_sync_keeps_durable_commits() {
    let (s, heap) = fresh(3);
    let mut t = heap.begin_write().unwrap();
    t.insert(b"durable", [1; 700]).unwrap();
    t.commit().unwrap();
    let mut t = heap.begin_write().unwrap();
    t.insert(b"fast", [2; 700]).unwrap();
    t.set_durability(Durability::None);
    t.commit().unwrap();
    drop(heap);
    let s2 = Arc::new(s.crash_clone());
    let heap = open(&s2, boot(0)).unwrap();
    s2.set_fail(Some(FailPlan {
        at: s2.syncs(),
        persistent: false,
        syncs_only: true,
        kind: FailKind::SyncLost,
    }));
    assert!(heap.begin_write().is_err(), "the settling sync fails");
    drop(heap);
    s2.set_fail(None);
    let s3 = Arc::new(s2.crash_clone());
    let heap = open(&s3, boot(0)).unwrap();
    heap.check().unwrap();
    assert!(contents(&heap).contains_key(&b"durable"[..]), "a durable commit was discarded");
    // The next process commits durably; then the power fails. The commit whose pages the failed
    // sync may have lost must not be under it (found by a longer `ops_crash` run).
    let mut t = heap.begin_write().unwrap();
    t.insert(b"later", [3; 700]).unwrap();
    t.commit().unwrap();
    drop(heap);
    for kind in [CrashKind::DurableOnly, CrashKind::RandomSubset, CrashKind::TornLast] {
        let s4 = Arc::new(MemStorage::from_image(&s3.crash_image(kind, 5), CAP));
        let heap = open(&s4, boot(1)).unwrap();
        heap.check().unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert!(contents(&heap).contains_key(&b"durable"[..]), "{kind:?}");
    }
}

/// Every image a power loss can leave of `s` (each kind, `seeds` random subsets) opens, passes
/// the integrity walk and, when `must_hold` is given, holds that key.
fn every_power_loss_is_sound(s: &MemStorage, seeds: u64, must_hold: Option<&[u8]>) {
    let kinds = [CrashKind::DurableOnly, CrashKind::TornLast, CrashKind::GrowthLost];
    let images =
        kinds.iter().map(|&k| (k, 0)).chain((0..seeds).map(|seed| (CrashKind::RandomSubset, seed)));
    for (kind, seed) in images {
        let img = Arc::new(MemStorage::from_image(&s.crash_image(kind, seed), CAP));
        let what = format!("{kind:?} seed {seed}");
        let heap = open(&img, boot(9)).unwrap_or_else(|e| panic!("{what}: does not open: {e}"));
        heap.check().unwrap_or_else(|e| panic!("{what}: integrity walk: {e}"));
        let got = contents(&heap);
        if let Some(k) = must_hold {
            assert!(got.contains_key(k), "{what}: a durable commit was lost");
        }
        heap.stats().unwrap_or_else(|e| panic!("{what}: stats: {e}"));
        drop(heap.begin_write().unwrap_or_else(|e| panic!("{what}: begin_write: {e}")));
    }
}

/// Fail the sync `after` syncs from now (0: the next one) with `kind`.
fn fail_sync(s: &MemStorage, after: u64, kind: FailKind) {
    s.set_fail(Some(FailPlan { at: s.syncs() + after, persistent: false, syncs_only: true, kind }));
}

/// A heap holding one durable commit ("durable"), reopened after a power cycle: that commit is
/// of an earlier boot, so nothing obliged the old code to sync before building on it.
fn rebooted_with_a_durable_commit(seed: u64) -> (Arc<MemStorage>, Heap) {
    let (s, heap) = fresh(seed);
    let mut t = heap.begin_write().unwrap();
    t.insert(b"durable", [1; 900]).unwrap();
    t.commit().unwrap();
    drop(heap);
    let s = Arc::new(MemStorage::from_image(&s.crash_image(CrashKind::DurableOnly, 0), CAP));
    let heap = open(&s, boot(1)).unwrap();
    (s, heap)
}

/// Regression (shared/findings, `ops_crash-resurrected-slot-corrupt`): a checkpoint's final sync
/// fails, so its slot is invalidated in the page cache only. The next process opened at the older
/// commit (of an earlier boot, so it did not sync) and wrote into the failed checkpoint's records;
/// a power loss kept the checkpoint's slot and dropped its invalidation: a corrupt heap.
#[test]
fn a_failed_checkpoint_never_comes_back_over_overwritten_records() {
    let (s, heap) = rebooted_with_a_durable_commit(11);
    for i in 0..20u8 {
        let mut t = heap.begin_write().unwrap();
        t.insert([b'f', i], [i; 15_000]).unwrap();
        t.set_durability(Durability::None);
        t.commit().unwrap();
    }
    // Two-phase (the commits since the durable one wrote more than a one-phase commit may
    // list): the first sync passes, the slot is written, the final sync fails.
    fail_sync(&s, 1, FailKind::NoSpace);
    assert!(heap.checkpoint().is_err());
    s.set_fail(None);
    // The process dies; the next one writes a non-durable commit on what it finds.
    let s2 = Arc::new(s.crash_clone());
    drop(heap);
    let heap = open(&s2, boot(1)).unwrap();
    let mut t = heap.begin_write().unwrap();
    for i in 0..20u8 {
        t.insert([b'g', i], [0xee; 700]).unwrap();
    }
    t.set_durability(Durability::None);
    t.commit().unwrap();
    every_power_loss_is_sound(&s2, 256, Some(b"durable"));
}

/// Regression (shared/findings): a durable commit of more than 256 KiB (two-phase) whose final
/// sync fails with EIO; the heap is reopened and one write transaction, never committed, writes
/// into the failed commit's records; a power loss must not bring that commit back over them.
#[test]
fn a_failed_large_commit_never_comes_back_under_a_live_writer() {
    let (s, heap) = rebooted_with_a_durable_commit(12);
    let mut t = heap.begin_write().unwrap();
    for i in 0..80u8 {
        t.insert([b'b', i], [i; 4000]).unwrap();
    }
    fail_sync(&s, 1, FailKind::Eio);
    assert!(t.commit().is_err());
    s.set_fail(None);
    drop(heap);
    let heap = open(&s, boot(1)).unwrap();
    let mut t = heap.begin_write().unwrap();
    for i in 0..80u8 {
        t.insert([b'c', i], [0xee; 4000]).unwrap();
    }
    // The power fails with the write transaction open.
    every_power_loss_is_sound(&s, 256, Some(b"durable"));
    drop(t);
}

/// A non-durable commit that returned `Ok` is never discarded by its own handle (reliability
/// issue, item 12b: the sync before the commit-time trim failed, the commit was invalidated).
#[test]
fn a_non_durable_commit_that_returned_ok_stays() {
    let (s, heap) = fresh(13);
    let commit = |t: crate::WriteTxn| {
        let mut t = t;
        t.set_durability(Durability::None);
        t.commit()
    };
    let mut t = heap.begin_write().unwrap();
    for i in 0..16u8 {
        t.insert([b'b', i], vec![i; 600_000]).unwrap();
    }
    commit(t).unwrap();
    let mut t = heap.begin_write().unwrap();
    for i in 0..16u8 {
        t.remove([b'b', i]).unwrap();
    }
    commit(t).unwrap();
    // The next commits may give the tail back; every sync among them fails.
    for i in 0..6u8 {
        fail_sync(&s, 0, FailKind::SyncLost);
        let mut t = heap.begin_write().unwrap();
        t.insert([b's', i], b"small").unwrap();
        if commit(t).is_err() {
            break;
        }
        s.set_fail(None);
        // Acknowledged: a reopen (the process lives on, or died) holds it.
        let again = open(&Arc::new(s.crash_clone()), boot(0)).unwrap();
        assert_eq!(
            again.begin_read().unwrap().get([b's', i]).unwrap(),
            Some(&b"small"[..]),
            "commit {i} returned Ok and was discarded"
        );
    }
}

/// Where the boot id is unknown (all zeros), a non-durable commit cannot be told apart from one
/// of an earlier boot: every commit is made durable, said in `Stats`, and nothing is lost.
#[test]
fn an_unknown_boot_id_makes_every_commit_durable() {
    let unknown = [0u8; 16];
    let s = Arc::new(MemStorage::from_image(&new_heap_image_seeded(&unknown, [3; 16]), CAP));
    let heap = open(&s, unknown).unwrap();
    let mut t = heap.begin_write().unwrap();
    t.insert(b"k", b"v").unwrap();
    t.set_durability(Durability::None);
    t.commit().unwrap();
    assert_eq!(heap.begin_read().unwrap().get(b"k").unwrap(), Some(&b"v"[..]));
    let st = heap.stats().unwrap();
    assert!(!st.boot_id_known);
    assert_eq!(st.durable_txn_id, st.txn_id, "the commit was made durable");
    drop(heap);
    let img = Arc::new(MemStorage::from_image(&s.crash_image(CrashKind::DurableOnly, 0), CAP));
    let heap = open(&img, unknown).unwrap();
    assert_eq!(heap.begin_read().unwrap().get(b"k").unwrap(), Some(&b"v"[..]));
}

/// Group commit on one thread (DESIGN §4.3): a durable commit staged, a second one built on it
/// and staged too; waiting for the first makes both durable with one sync, whatever order the
/// waits come in. A power loss before the wait may leave either state or the one before; after
/// it, only the second.
#[test]
fn staged_durable_commits_share_one_sync() {
    let (s, heap) = fresh(7);
    let commit = |k: &[u8]| {
        let mut tx = heap.begin_write().unwrap();
        tx.insert(k, b"v").unwrap();
        tx
    };
    commit(b"base").commit().unwrap();
    for wait_second_first in [false, true] {
        let before = s.syncs();
        let first = commit(b"one").commit_pending().unwrap();
        // Staged: not visible to readers yet, but the next transaction builds on it.
        assert_eq!(heap.begin_read().unwrap().get(b"one").unwrap(), None);
        let mut tx = heap.begin_write().unwrap();
        assert_eq!(tx.get(b"one").unwrap(), Some(&b"v"[..]));
        tx.insert(b"two", b"v").unwrap();
        let second = tx.commit_pending().unwrap();
        assert_eq!(s.syncs(), before, "no sync before a wait");
        every_power_loss_is_sound(&s, 8, Some(b"base"));
        if wait_second_first {
            second.wait().unwrap();
            first.wait().unwrap();
        } else {
            first.wait().unwrap();
            second.wait().unwrap();
        }
        assert_eq!(s.syncs() - before, 1, "one sync for both");
        let rx = heap.begin_read().unwrap();
        assert!(rx.get(b"one").unwrap().is_some() && rx.get(b"two").unwrap().is_some());
        drop(rx);
        every_power_loss_is_sound(&s, 16, Some(b"two"));
        assert_eq!(heap.stats().unwrap().durable_txn_id, heap.stats().unwrap().txn_id);
        let mut tx = heap.begin_write().unwrap();
        tx.remove(b"one").unwrap();
        tx.remove(b"two").unwrap();
        tx.commit().unwrap();
    }
    heap.check().unwrap();
}

/// A failed shared sync fails every commit that waited on it, poisons the handle, and the heap
/// forgets both commits (I13): after a process crash and after a power loss it holds the last
/// durable commit.
#[test]
fn a_failed_shared_sync_fails_every_commit_that_waited_on_it() {
    for kind in [FailKind::Eio, FailKind::SyncLost] {
        let (s, heap) = fresh(11);
        let mut tx = heap.begin_write().unwrap();
        tx.insert(b"base", b"durable").unwrap();
        tx.commit().unwrap();
        let mut tx = heap.begin_write().unwrap();
        tx.insert(b"one", b"v").unwrap();
        let first = tx.commit_pending().unwrap();
        let mut tx = heap.begin_write().unwrap();
        tx.insert(b"two", b"v").unwrap();
        let second = tx.commit_pending().unwrap();
        fail_sync(&s, 0, kind);
        assert!(matches!(first.wait(), Err(Error::Io(_))), "{kind:?}");
        assert!(matches!(second.wait(), Err(Error::Io(_))), "{kind:?}: its waiter fails too");
        assert!(matches!(heap.begin_write(), Err(Error::Poisoned)));
        drop(heap);
        s.set_fail(None);
        let crashed = Arc::new(s.crash_clone());
        let reopened = open(&crashed, boot(0)).unwrap();
        let got = contents(&reopened);
        assert!(got.contains_key(&b"base"[..]) && !got.contains_key(&b"one"[..]), "{kind:?}");
        assert!(!got.contains_key(&b"two"[..]), "{kind:?}");
        reopened.check().unwrap();
        every_power_loss_is_sound(&s, 8, Some(b"base"));
    }
}

/// Threads committing durably at once share syncs (each sync here takes 2 ms, so the others
/// commit while it runs): fewer syncs than commits, every commit visible and durable once its
/// call returned, and every power loss after the last one keeps them all.
#[test]
fn concurrent_durable_commits_share_syncs() {
    let (s, heap) = fresh(13);
    drop(heap.begin_write().unwrap()); // settles the new heap
    s.set_sync_delay(std::time::Duration::from_millis(2));
    let (threads, each) = (6u32, 15u32);
    let before = s.syncs();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let heap = heap.clone();
            scope.spawn(move || {
                for i in 0..each {
                    let mut tx = heap.begin_write().unwrap();
                    let k = format!("t{t}-{i}");
                    tx.insert(&k, k.as_bytes()).unwrap();
                    tx.commit().unwrap();
                    // Acknowledged: visible to a new read transaction of any thread.
                    assert!(heap.begin_read().unwrap().get(&k).unwrap().is_some());
                }
            });
        }
    });
    let syncs = s.syncs() - before;
    let commits = u64::from(threads * each);
    assert!(syncs < commits, "{syncs} syncs for {commits} concurrent durable commits");
    eprintln!("{commits} commits on {threads} threads: {syncs} syncs");
    s.set_sync_delay(std::time::Duration::ZERO);
    assert_eq!(heap.begin_read().unwrap().len().unwrap() as u64, commits);
    let stats = heap.stats().unwrap();
    assert_eq!(stats.durable_txn_id, stats.txn_id, "the last commit is durable");
    heap.check().unwrap();
    every_power_loss_is_sound(&s, 8, Some(format!("t{}-{}", threads - 1, each - 1).as_bytes()));
}

/// Regression (found by the model test while group commit was built): a staged commit's
/// records, replaced by the next staged commit, stayed in the extents that commit's slot lists;
/// once its sync made them reusable, the next transaction overwrote them before any sync, and a
/// power loss then failed the check of the acknowledged commit, rolling the heap back past it.
/// A commit's extents list only what its snapshot reaches.
#[test]
fn space_freed_by_a_group_is_not_listed_by_its_slot() {
    let (s, heap) = fresh(17);
    let put = |tx: &mut crate::WriteTxn, round: u8| {
        for k in 0..8u8 {
            tx.insert([k], [round; 200]).unwrap();
        }
    };
    let mut tx = heap.begin_write().unwrap();
    put(&mut tx, 0);
    tx.commit().unwrap();
    let mut tx = heap.begin_write().unwrap();
    put(&mut tx, 1);
    let first = tx.commit_pending().unwrap();
    // Replaces every record the staged commit wrote.
    let mut tx = heap.begin_write().unwrap();
    put(&mut tx, 2);
    tx.insert(b"last", b"acknowledged").unwrap();
    let second = tx.commit_pending().unwrap();
    first.wait().unwrap();
    second.wait().unwrap();
    // Reuses what the second commit freed (durable now), and is never committed.
    let mut tx = heap.begin_write().unwrap();
    put(&mut tx, 3);
    every_power_loss_is_sound(&s, 32, Some(b"last"));
    drop(tx);
}

/// DESIGN §4.3: a non-durable commit made on top of a staged one is made durable (the staged
/// commit's waiter relies on it): when it returns, it is durable, and the staged commit's wait
/// has nothing left to sync.
#[test]
fn a_non_durable_commit_on_a_staged_one_is_made_durable() {
    let (s, heap) = fresh(19);
    let mut tx = heap.begin_write().unwrap();
    tx.insert(b"base", b"durable").unwrap();
    tx.commit().unwrap();
    let mut tx = heap.begin_write().unwrap();
    tx.insert(b"staged", b"v").unwrap();
    let staged = tx.commit_pending().unwrap();
    let mut tx = heap.begin_write().unwrap();
    tx.insert(b"fast", b"v").unwrap();
    tx.set_durability(Durability::None);
    tx.commit().unwrap();
    let stats = heap.stats().unwrap();
    assert_eq!(stats.durable_txn_id, stats.txn_id, "made durable");
    let syncs = s.syncs();
    staged.wait().unwrap();
    assert_eq!(s.syncs(), syncs, "the staged commit's wait syncs nothing more");
    every_power_loss_is_sound(&s, 8, Some(b"fast"));
}

/// Wait (up to 10 s) until `cond` holds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "{what}: not within 10 s");
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// Regression (issue 23): a durable commit waited for another thread's open write transaction.
/// A commits and syncs (each sync here takes 300 ms); B1..Bn commit during that sync (staged);
/// then C begins a write transaction and, holding it open, waits for A's and every B's
/// `commit()` to return. Before the fix, A's syncer handed the staged commits over by taking
/// the writer mutex, which C held: A never returned while C waited for it (a deadlock). Now a
/// staged commit's slot is written under the group's mutex alone and its own waiters sync it.
/// A liveness check (10 s bounds), not a timing test. (C in a second handle of the same heap:
/// `tests/group_commit.rs`.)
fn commits_return_while_another_transaction_is_open(staged: usize) {
    use std::sync::mpsc::{RecvTimeoutError, channel};
    use std::time::Duration;
    let limit = Duration::from_secs(10);
    let (s, heap) = fresh(23 + staged as u64);
    drop(heap.begin_write().unwrap()); // settles the new heap
    s.set_sync_delay(Duration::from_millis(300));
    let (done_tx, done_rx) = channel::<String>();
    let (held_tx, held_rx) = channel::<()>();
    std::thread::scope(|scope| {
        let a = {
            let (heap, done) = (heap.clone(), done_tx.clone());
            scope.spawn(move || {
                let mut tx = heap.begin_write().unwrap();
                tx.insert(b"a", vec![1u8; 64 << 10]).unwrap();
                tx.commit().unwrap();
                done.send("a".into()).unwrap();
            })
        };
        eventually("A's commit syncs", || heap.group_pending().0);
        let mut last = None;
        for b in 0..staged {
            let (b_heap, done) = (heap.clone(), done_tx.clone());
            scope.spawn(move || {
                let mut tx = b_heap.begin_write().unwrap();
                tx.insert(format!("b{b}"), b"staged").unwrap();
                tx.commit().unwrap();
                done.send(format!("b{b}")).unwrap();
            });
            // Staged: the commit is made, and waits for the sync after A's.
            eventually("B's commit is staged", || {
                let now = heap.group_pending().1;
                now.is_some() && now != last
            });
            last = heap.group_pending().1;
        }
        assert!(heap.group_pending().0, "every B was staged during A's sync");
        let c = {
            let heap = heap.clone();
            scope.spawn(move || {
                let mut tx = heap.begin_write().unwrap();
                tx.insert(b"c", b"held").unwrap();
                held_tx.send(()).unwrap();
                let mut returned = Vec::new();
                for _ in 0..=staged {
                    match done_rx.recv_timeout(limit) {
                        Ok(who) => returned.push(who),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                tx.commit().unwrap();
                returned
            })
        };
        held_rx.recv_timeout(limit).expect("C holds its transaction");
        let returned = c.join().unwrap();
        assert_eq!(
            returned.len(),
            staged + 1,
            "with {staged} staged: only {returned:?} returned while another thread held a \
             write transaction"
        );
        a.join().unwrap();
    });
    s.set_sync_delay(Duration::ZERO);
    let got = contents(&heap);
    assert_eq!(got.len(), staged + 2, "A, every B and C");
    heap.check().unwrap();
    every_power_loss_is_sound(&s, 4, Some(b"c"));
}

#[test]
fn a_durable_commit_never_waits_for_another_threads_open_transaction() {
    for staged in [1, 2, 4, 8] {
        commits_return_while_another_transaction_is_open(staged);
    }
}

/// DESIGN §4.3 (issue 23): a transaction T built on a staged commit S fails after writing
/// (here: the file's growth fails, ENOSPC, which poisons nothing), and S is synced all the
/// same, by its own waiter. S must then be whole: before the fix T freed S's blob run as
/// unreachable at once, wrote chain pages of its free lists into it, failed on growth for its
/// own blob, and S's slot was then written naming a damaged blob. Now the replaced blob is
/// freed like any record a durable commit may reach (reused once a later commit is durable).
/// Swept over the size T writes first, so that the failing growth falls at each of T's
/// allocations in turn.
#[test]
fn a_failed_transaction_on_a_staged_commit_leaves_it_whole() {
    let mut failed_commits = 0;
    for pad in (0..96).map(|i| i * 4096) {
        let (s, heap) = fresh(29);
        let mut tx = heap.begin_write().unwrap();
        for k in 0..3000u32 {
            tx.insert(k.to_le_bytes(), [k as u8; 100]).unwrap();
        }
        tx.commit().unwrap();
        let mut tx = heap.begin_write().unwrap();
        tx.insert(b"staged", b"S").unwrap();
        let staged = tx.commit_pending().unwrap();
        let mut tx = heap.begin_write().unwrap();
        // Many frees: T's pending list spills into chain pages at commit.
        for k in 0..2500u32 {
            tx.remove(k.to_le_bytes()).unwrap();
        }
        tx.insert(b"pad", vec![7u8; pad]).unwrap();
        s.fail_growth(Some(0));
        let res = tx.commit();
        s.fail_growth(None);
        if let Err(e) = &res {
            assert!(matches!(e, Error::Io(io) if io.raw_os_error() == Some(libc::ENOSPC)), "{e}");
            failed_commits += 1;
        }
        staged.wait().unwrap();
        // The next transaction (which reloads the allocator after a failure) and a new process
        // both find S whole.
        let mut tx = heap.begin_write().unwrap();
        assert_eq!(tx.get(b"staged").unwrap(), Some(&b"S"[..]));
        tx.insert(b"after", b"ok").unwrap();
        tx.commit().unwrap();
        heap.check().unwrap_or_else(|e| panic!("pad {pad}: {e}"));
        drop(heap);
        let crashed = Arc::new(s.crash_clone());
        let reopened = open(&crashed, boot(0)).unwrap();
        reopened.check().unwrap_or_else(|e| panic!("pad {pad}: {e}"));
        every_power_loss_is_sound(&s, 2, Some(b"after"));
    }
    assert!(failed_commits > 10, "the growth failed at T's commit in {failed_commits} runs");
}
