//! Behaviour through the public API: transactions, snapshots, limits, growth, options.

use pheap::prelude::*;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use pheap::{Durability, Error, Heap, ReadTxn, WriteTxn};

fn tmp() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pheap");
    (dir, path)
}

mod common;

fn snapshot(rx: &ReadTxn) -> common::Model {
    common::snapshot(rx).unwrap()
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Heap>();
    send_sync::<ReadTxn>();
    send::<WriteTxn>();
    send_sync::<Error>();
}

#[test]
fn write_sees_own_writes_and_drop_discards() {
    let (_d, path) = tmp();
    let heap = Heap::open(&path).unwrap();
    let mut tx = heap.begin_write().unwrap();
    tx.insert(b"a", b"1").unwrap();
    tx.insert(b"", b"empty key").unwrap();
    tx.insert(b"e", b"").unwrap();
    assert_eq!(tx.get(b"a").unwrap(), Some(&b"1"[..]));
    assert_eq!(tx.get(b"").unwrap(), Some(&b"empty key"[..]));
    assert_eq!(tx.get(b"e").unwrap(), Some(&b""[..]));
    assert_eq!(tx.len().unwrap(), 3);
    assert!(heap.begin_read().unwrap().is_empty().unwrap(), "uncommitted writes are invisible");
    drop(tx);
    assert!(heap.begin_read().unwrap().is_empty().unwrap());
    let mut tx = heap.begin_write().unwrap();
    heap.check().unwrap(); // the walk runs beside an open write transaction
    assert!(tx.is_empty().unwrap(), "a dropped transaction left nothing behind");
    tx.insert(b"a", b"2").unwrap();
    assert!(!tx.remove(b"missing").unwrap());
    tx.abort();
    assert!(heap.begin_read().unwrap().is_empty().unwrap());
    heap.check().unwrap();
}

#[test]
fn readers_keep_their_snapshot_while_the_writer_commits() {
    let (_d, path) = tmp();
    let heap = Heap::open(&path).unwrap();
    let mut tx = heap.begin_write().unwrap();
    for i in 0..1000u32 {
        tx.insert(i.to_be_bytes(), [1u8; 100]).unwrap();
    }
    tx.commit().unwrap();
    let rx = heap.begin_read().unwrap();
    let before = snapshot(&rx);
    let held = rx.get(7u32.to_be_bytes()).unwrap().unwrap();
    // Overwrite and remove everything many times: space freed by these commits must not be
    // reused under the open snapshot.
    for round in 0..20u8 {
        let mut tx = heap.begin_write().unwrap();
        for i in 0..1000u32 {
            if i % 3 == 0 {
                tx.remove(i.to_be_bytes()).unwrap();
            } else {
                tx.insert(i.to_be_bytes(), [round + 2; 100]).unwrap();
            }
        }
        tx.set_durability(if round % 2 == 0 { Durability::None } else { Durability::Immediate });
        tx.commit().unwrap();
    }
    assert_eq!(held, &[1u8; 100][..]);
    assert_eq!(snapshot(&rx), before);
    assert_eq!(rx.len().unwrap(), 1000);
    let now = heap.begin_read().unwrap();
    assert_eq!(now.len().unwrap(), 666);
    assert_eq!(now.get(1u32.to_be_bytes()).unwrap().unwrap(), &[21u8; 100][..]);
    assert!(now.txn_id() > rx.txn_id());
    drop(rx);
    drop(now);
    heap.check().unwrap();
}

#[test]
fn concurrent_readers_on_threads_see_whole_commits() {
    // Bank transfers: every snapshot must sum to the same total.
    let (_d, path) = tmp();
    let heap = Heap::open(&path).unwrap();
    let accounts = 50u32;
    let mut tx = heap.begin_write().unwrap();
    for a in 0..accounts {
        tx.insert(a.to_be_bytes(), 100u64.to_le_bytes()).unwrap();
    }
    tx.commit().unwrap();
    let total = 100 * accounts as u64;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The id of the last commit acknowledged to the writer.
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let checker = {
        let heap = heap.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut walks = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let report = heap.check().unwrap();
                assert_eq!(report.entries, accounts as u64);
                walks += 1;
            }
            walks
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let heap = heap.clone();
            let stop = stop.clone();
            let acked = acked.clone();
            thread::spawn(move || {
                let mut seen = 0u64;
                let mut last_txn = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let before = acked.load(std::sync::atomic::Ordering::Acquire);
                    let rx = heap.begin_read().unwrap();
                    assert!(
                        rx.txn_id() >= before,
                        "a reader saw a commit older than an acknowledged one"
                    );
                    assert!(rx.txn_id() >= last_txn, "snapshots go forward");
                    last_txn = rx.txn_id();
                    let sum: u64 = rx
                        .iter()
                        .map(|r| {
                            u64::from_le_bytes(r.unwrap().1.bytes().unwrap().try_into().unwrap())
                        })
                        .sum();
                    assert_eq!(sum, total);
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    let mut x = 12345u64;
    for i in 0..2000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        let (a, b) = (((x >> 33) % accounts as u64) as u32, ((x >> 13) % accounts as u64) as u32);
        let mut tx = heap.begin_write().unwrap();
        let va = u64::from_le_bytes(tx.get(a.to_be_bytes()).unwrap().unwrap().try_into().unwrap());
        let vb = u64::from_le_bytes(tx.get(b.to_be_bytes()).unwrap().unwrap().try_into().unwrap());
        let amount = va.min(7);
        tx.insert(a.to_be_bytes(), (va - amount).to_le_bytes()).unwrap();
        let vb = if a == b { va - amount } else { vb };
        tx.insert(b.to_be_bytes(), (vb + amount).to_le_bytes()).unwrap();
        tx.set_durability(if i % 50 == 0 { Durability::Immediate } else { Durability::None });
        let txn = tx.txn_id();
        tx.commit().unwrap();
        acked.store(txn, std::sync::atomic::Ordering::Release);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert!(checker.join().unwrap() > 0);
    heap.check().unwrap();
}

#[test]
fn one_writer_at_a_time() {
    let (_d, path) = tmp();
    let heap = Heap::open(&path).unwrap();
    let tx = heap.begin_write().unwrap();
    assert!(matches!(heap.try_begin_write(), Err(Error::WriteInProgress)));
    let barrier = Arc::new(Barrier::new(2));
    let h2 = heap.clone();
    let b2 = barrier.clone();
    let waiter = thread::spawn(move || {
        b2.wait();
        let mut tx = h2.begin_write().unwrap(); // waits for the first to finish
        assert_eq!(tx.get(b"k").unwrap(), Some(&b"first"[..]));
        tx.insert(b"k", b"second").unwrap();
        tx.commit().unwrap();
    });
    barrier.wait();
    thread::sleep(Duration::from_millis(50));
    let mut tx = tx;
    tx.insert(b"k", b"first").unwrap();
    tx.commit().unwrap();
    waiter.join().unwrap();
    assert_eq!(heap.begin_read().unwrap().get(b"k").unwrap(), Some(&b"second"[..]));
    // A write transaction moves to another thread.
    let mut tx = heap.begin_write().unwrap();
    thread::spawn(move || {
        tx.insert(b"moved", b"yes").unwrap();
        tx.commit().unwrap();
    })
    .join()
    .unwrap();
    assert!(heap.begin_read().unwrap().contains_key(b"moved").unwrap());
}

#[test]
fn key_and_value_limits() {
    let (_d, path) = tmp();
    let heap = Heap::open(&path).unwrap();
    let mut tx = heap.begin_write().unwrap();
    let big_key = vec![b'k'; 64 * 1024];
    tx.insert(&big_key, b"v").unwrap();
    let max_key = vec![b'm'; pheap::MAX_KEY_LEN];
    tx.insert(&max_key, b"w").unwrap();
    let too_long = vec![0u8; pheap::MAX_KEY_LEN + 1];
    assert!(matches!(tx.insert(&too_long, b"x"), Err(Error::KeyTooLarge { .. })));
    // An oversized key is refused without spoiling the transaction.
    tx.insert(b"after", b"ok").unwrap();
    tx.commit().unwrap();
    let rx = heap.begin_read().unwrap();
    assert_eq!(rx.get(&big_key).unwrap(), Some(&b"v"[..]));
    assert_eq!(rx.get(&max_key).unwrap(), Some(&b"w"[..]));
    assert_eq!(rx.len().unwrap(), 3);
    drop(rx);
    heap.check().unwrap();
}

#[test]
fn value_of_a_gibibyte_and_a_file_past_one_gibibyte_keep_borrowed_slices_valid() {
    let (_d, path) = tmp();
    let heap = Heap::open(&path).unwrap();
    let mut tx = heap.begin_write().unwrap();
    tx.insert(b"early", b"small and early").unwrap();
    tx.commit().unwrap();
    let rx = heap.begin_read().unwrap();
    let early = rx.get(b"early").unwrap().unwrap();
    let first_size = heap.stats().unwrap().file_size;
    // One value of 1 GiB, written in its own transaction.
    let gib: Vec<u8> = (0..1usize << 30).map(|i| (i % 251) as u8).collect();
    let mut tx = heap.begin_write().unwrap();
    tx.insert(b"gib", &gib).unwrap();
    tx.commit().unwrap();
    // And more, so the file outgrows its first address-space reservation.
    let mut tx = heap.begin_write().unwrap();
    for i in 0..40u32 {
        tx.insert(i.to_be_bytes(), vec![i as u8; 4 << 20]).unwrap();
    }
    tx.commit().unwrap();
    let stats = heap.stats().unwrap();
    assert!(stats.file_size > (1 << 30) + (128 << 20), "{stats:?}");
    assert!(stats.file_size > first_size);
    // The slice borrowed before all that growth is still readable and unchanged.
    assert_eq!(early, b"small and early");
    let rx2 = heap.begin_read().unwrap();
    assert!(rx2.get(b"gib").unwrap().unwrap() == &gib[..]);
    assert_eq!(rx2.get(39u32.to_be_bytes()).unwrap().unwrap(), &vec![39u8; 4 << 20][..]);
    drop(gib);
    drop((rx, rx2));
    heap.check().unwrap();
    // Reopen: O(1), and the data is there.
    drop(heap);
    let heap = Heap::open(&path).unwrap();
    let rx = heap.begin_read().unwrap();
    let v = rx.get(b"gib").unwrap().unwrap();
    assert_eq!(v.len(), 1 << 30);
    assert_eq!(v[12345], (12345 % 251) as u8);
}

#[test]
fn reopen_resumes_both_durabilities() {
    let (_d, path) = tmp();
    {
        let heap = Heap::options().durability(Durability::None).open(&path).unwrap();
        let mut tx = heap.begin_write().unwrap();
        tx.insert(b"fast", b"1").unwrap();
        tx.commit().unwrap();
        let mut tx = heap.begin_write().unwrap();
        tx.insert(b"durable", b"2").unwrap();
        tx.set_durability(Durability::Immediate);
        tx.commit().unwrap();
        let mut tx = heap.begin_write().unwrap();
        tx.insert(b"fast again", b"3").unwrap();
        tx.commit().unwrap();
    }
    // Same boot: the non-durable commit is still there (the page cache holds it).
    let heap = Heap::open(&path).unwrap();
    let rx = heap.begin_read().unwrap();
    assert_eq!(rx.len().unwrap(), 3);
    assert_eq!(rx.get(b"fast again").unwrap(), Some(&b"3"[..]));
    drop(rx);
    heap.checkpoint().unwrap();
    let txn = heap.stats().unwrap().txn_id;
    heap.checkpoint().unwrap();
    assert_eq!(heap.stats().unwrap().txn_id, txn, "a second checkpoint has nothing to do");
    heap.check().unwrap();
}

#[test]
fn read_only_and_two_handles_in_one_process() {
    let (_d, path) = tmp();
    assert!(Heap::options().create(false).open(&path).is_err(), "no file, no create");
    let heap = Heap::open(&path).unwrap();
    let mut tx = heap.begin_write().unwrap();
    tx.insert(b"k", b"v").unwrap();
    // A second handle of the same file (here through a symbolic link) is a second writer
    // candidate: it must wait for the first one's transaction.
    let link = path.with_file_name("link.pheap");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let other = Heap::open(&link).unwrap();
    assert_eq!(other.lock_file(), heap.lock_file(), "one lock file for every path to a heap");
    assert!(matches!(other.try_begin_write(), Err(Error::WriteInProgress)));
    tx.commit().unwrap();
    let mut tx2 = other.try_begin_write().unwrap();
    assert_eq!(tx2.get(b"k").unwrap(), Some(&b"v"[..]), "the other handle's commit is seen");
    tx2.insert(b"k2", b"v2").unwrap();
    assert!(matches!(heap.try_begin_write(), Err(Error::WriteInProgress)));
    tx2.commit().unwrap();
    let ro = Heap::options().read_only(true).open(&path).unwrap();
    let ro2 = Heap::options().read_only(true).open(&path).unwrap();
    assert_eq!(ro.begin_read().unwrap().get(b"k2").unwrap(), Some(&b"v2"[..]));
    assert_eq!(ro2.begin_read().unwrap().len().unwrap(), 2);
    assert!(matches!(ro.begin_write(), Err(Error::ReadOnly)));
    // Pins of one handle hold space against the other's writer.
    let rx = ro.begin_read().unwrap();
    for i in 0..50u32 {
        let mut tx = heap.begin_write().unwrap();
        tx.insert(b"k", i.to_le_bytes().repeat(40)).unwrap();
        tx.commit().unwrap();
    }
    assert_eq!(rx.get(b"k").unwrap(), Some(&b"v"[..]), "the pinned snapshot is intact");
    assert_eq!(heap.stats().unwrap().oldest_reader, Some(rx.txn_id()));
    drop(other);
    drop(heap);
    assert_eq!(rx.get(b"k2").unwrap(), Some(&b"v2"[..]));
    ro.check().unwrap();
}

#[test]
fn stats_report_the_latest_commit() {
    let (_d, path) = tmp();
    let heap = Heap::open(&path).unwrap();
    let s0 = heap.stats().unwrap();
    assert_eq!((s0.entries, s0.txn_id, s0.oldest_reader), (0, 0, None));
    let mut tx = heap.begin_write().unwrap();
    for i in 0..100u32 {
        tx.insert(i.to_le_bytes(), [0; 50]).unwrap();
    }
    tx.commit().unwrap();
    let rx = heap.begin_read().unwrap();
    let s = heap.stats().unwrap();
    assert_eq!((s.entries, s.txn_id, s.oldest_reader), (100, 1, Some(1)));
    assert!(s.live_bytes >= 100 * (16 + 8 + 50) && s.used_size <= s.file_size);
    drop(rx);
    assert_eq!(heap.stats().unwrap().oldest_reader, None);
}

#[test]
fn transactions_outlive_their_heap_handle() {
    let (_d, path) = tmp();
    let heap = Heap::open(&path).unwrap();
    let mut tx = heap.begin_write().unwrap();
    tx.insert(b"k", b"v").unwrap();
    tx.commit().unwrap();
    let rx = heap.begin_read().unwrap();
    let mut tx = heap.begin_write().unwrap();
    drop(heap);
    tx.insert(b"k2", b"v2").unwrap();
    tx.commit().unwrap();
    assert_eq!(rx.get(b"k").unwrap(), Some(&b"v"[..]));
    assert_eq!(rx.get(b"k2").unwrap(), None, "the snapshot predates the commit");
    drop(rx);
    let heap = Heap::open(&path).unwrap(); // the last transaction released the lock
    assert_eq!(heap.begin_read().unwrap().len().unwrap(), 2);
    heap.check().unwrap();
}

#[test]
fn closing_gives_back_the_growth_slack() {
    let (_d, path) = tmp();
    let heap = Heap::open(&path).unwrap();
    let mut tx = heap.begin_write().unwrap();
    for i in 0..20_000u32 {
        tx.insert(i.to_le_bytes(), [7u8; 150]).unwrap();
    }
    tx.commit().unwrap();
    let stats = heap.stats().unwrap();
    assert!(stats.file_size > stats.used_size, "growth leaves slack while open: {stats:?}");
    drop(heap);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), stats.used_size);
    let heap = Heap::open(&path).unwrap();
    assert_eq!(heap.begin_read().unwrap().len().unwrap(), 20_000);
    heap.check().unwrap();
}

/// A write transaction may outlive every `Heap` handle: dropping it then closes the heap.
/// Regression (found by the test kit's harness): the transaction held the handle's writer mutex
/// while its last reference to the handle's shared state dropped, whose close-time trim locks
/// that mutex: the thread deadlocked on itself.
#[test]
fn a_write_transaction_outliving_its_heap_closes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.pheap");
    let (done, finished) = std::sync::mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        let heap = Heap::open(&p).unwrap();
        let mut tx = heap.begin_write().unwrap();
        tx.insert(b"k", b"v").unwrap();
        drop(heap);
        drop(tx); // the last reference: closes the heap
        let heap = Heap::open(&p).unwrap();
        let tx = heap.begin_write().unwrap();
        drop(heap);
        tx.commit().unwrap(); // committing needs no handle either
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("dropping a write transaction after its heap deadlocked");
    let heap = Heap::open(&path).unwrap();
    assert_eq!(heap.begin_read().unwrap().get(b"k").unwrap(), None, "the first was dropped");
    heap.check().unwrap();
}

/// Each thread keeps a read context per handle (its latest commit, mapping and a spare reader
/// slot): the contexts own the handle, so closing the last `Heap` must end them, or the file
/// would stay open (locked and mapped) for as long as the threads live. Also: a thread's cached
/// context follows every commit, including one that grows the file (a new mapping).
#[test]
fn thread_read_contexts_follow_commits_and_end_with_the_handle() {
    let (_dir, path) = tmp();
    let heap = Heap::options().durability(Durability::None).open(&path).unwrap();
    let threads = 4;
    let go = Arc::new(Barrier::new(threads + 1));
    let done = Arc::new(Barrier::new(threads + 1));
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let (heap, go, done) = (heap.clone(), go.clone(), done.clone());
            thread::spawn(move || {
                for round in 0..3u32 {
                    go.wait();
                    let rx = heap.begin_read().unwrap();
                    assert_eq!(rx.get(b"round").unwrap(), Some(&round.to_le_bytes()[..]));
                    assert_eq!(rx.len().unwrap() as u32, 1 + round * 1000);
                    drop(rx);
                    done.wait();
                }
                drop(heap);
                // This thread lives on, idle, while the handle closes.
                thread::sleep(Duration::from_millis(300));
            })
        })
        .collect();
    for round in 0..3u32 {
        let mut tx = heap.begin_write().unwrap();
        tx.insert(b"round", round.to_le_bytes()).unwrap();
        if round > 0 {
            // Enough to grow the file past its first mapping.
            for i in 0..1000u32 {
                tx.insert(format!("{round}-{i}"), [7u8; 600]).unwrap();
            }
        }
        tx.commit().unwrap();
        go.wait();
        done.wait();
    }
    drop(heap);
    // Every handle is closed while the reading threads still live: a copy may replace the file
    // (refused while any handle has it open).
    let (_dir2, other) = tmp();
    let src = Heap::open(&other).unwrap();
    src.copy_to_overwriting(&path).expect("the closed heap is not in use");
    for h in hs {
        h.join().unwrap();
    }
}
