#![allow(unsafe_code)] // posix_fadvise: to evict the page cache for the cold phase
//! Space: `copy_to` against a plain copy of the same file, and the file's size through the
//! standard workload (bulk load, removing half the keys, `compact`).
//!
//! ```text
//! cargo bench --bench space
//! ```

use pheap::prelude::*;
use std::time::Instant;

use pheap::{Durability, Heap};
use rand::{Rng, SeedableRng};

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let n: usize =
        std::env::var("PHEAP_BENCH_N").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("space.pheap");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(42);
    let keys: Vec<[u8; 24]> = (0..n).map(|_| rng.random()).collect();
    let value: Vec<u8> = (0..150).map(|i| i as u8).collect();
    let raw = (n * (24 + 150)) as f64;
    let heap = Heap::options().durability(Durability::None).open(&path).unwrap();
    let mut tx = heap.begin_write().unwrap();
    for k in &keys {
        tx.insert(k, &value).unwrap();
    }
    tx.commit().unwrap();
    heap.checkpoint().unwrap();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let report = |what: &str, heap: &Heap| {
        let s = heap.stats().unwrap();
        println!(
            "{what:<28} file {:8.1} MiB = {:.3}x raw, live {:8.1} MiB, free {:8.1} MiB",
            mib(s.file_size),
            s.file_size as f64 / raw,
            mib(s.live_bytes),
            mib(s.free_bytes)
        );
        s.file_size
    };
    println!("{n} keys of 24 + 150 bytes ({:.1} MiB raw)", raw / (1 << 20) as f64);
    report("after bulk load", &heap);

    // copy_to against std::fs::copy of the same file + fsync, medians of 3: the page cache warm
    // for both, then cold (the source evicted before each; the heap reopened, so none of its
    // pages is mapped). A sealed copy (seal_to) rebuilds the heap entry by entry: what copy_to
    // did before it copied by pages.
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let size = std::fs::metadata(&path).unwrap().len() as f64;
    let rate = |t: Instant| size / t.elapsed().as_secs_f64() / (1 << 20) as f64;
    let plain_copy = |i: usize| {
        let dest = dir.path().join(format!("plain{i}"));
        let t = Instant::now();
        std::fs::copy(&path, &dest).unwrap();
        std::fs::File::open(&dest).unwrap().sync_all().unwrap();
        let r = rate(t);
        std::fs::remove_file(&dest).unwrap();
        r
    };
    let mut heap = heap;
    for cold in [false, true] {
        let (mut copies, mut seals, mut plain) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..3 {
            if cold {
                drop(heap);
                evict(&path);
                heap = Heap::open(&path).unwrap();
            }
            let dest = dir.path().join(format!("copy{i}.pheap"));
            let t = Instant::now();
            let stats = heap.copy_to(&dest).unwrap();
            copies.push(rate(t));
            assert!(stats.by_pages);
            std::fs::remove_file(&dest).unwrap();
            if cold {
                evict(&path);
            }
            plain.push(plain_copy(i));
            if !cold {
                let t = Instant::now();
                heap.seal_to(&dest).unwrap();
                seals.push(rate(t));
                std::fs::remove_file(&dest).unwrap();
            }
        }
        let (c, p) = (median(copies), median(plain));
        let phase = if cold { "cold" } else { "warm" };
        println!(
            "{phase}: copy_to (by pages) {c:.0} MiB/s of source file, plain copy + fsync {p:.0} MiB/s: {:.2}x",
            c / p
        );
        if !cold {
            let s = median(seals);
            println!("{phase}: seal_to (rebuilt entry by entry) {s:.0} MiB/s: {:.2}x", s / p);
        }
    }
    let mut tx = heap.begin_write().unwrap();
    for k in keys.iter().step_by(2) {
        tx.remove(k).unwrap();
    }
    tx.commit().unwrap();
    for _ in 0..3 {
        heap.checkpoint().unwrap();
        let mut tx = heap.begin_write().unwrap();
        tx.insert(b"tick", b"").unwrap();
        tx.commit().unwrap();
    }
    report("after removing half", &heap);
    let t = Instant::now();
    let c = heap.compact().unwrap();
    println!(
        "compact: {:.2} s, {:.1} MiB moved in {} steps",
        t.elapsed().as_secs_f64(),
        mib(c.moved_bytes),
        c.steps
    );
    report("after compact", &heap);
    let dest = dir.path().join("compacted.pheap");
    let cs = heap.copy_to(&dest).unwrap();
    println!(
        "{:<28} file {:8.1} MiB = {:.3}x raw",
        "copy_to of that",
        mib(cs.file_size),
        cs.file_size as f64 / raw * 1.0
    );
}

/// Drop the file's pages from the page cache (none of them mapped by this process).
fn evict(path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
}
