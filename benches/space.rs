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

    // copy_to against std::fs::copy of the same file (page cache warm for both), medians of 3.
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let size = std::fs::metadata(&path).unwrap().len() as f64;
    let (mut copies, mut plain) = (Vec::new(), Vec::new());
    for i in 0..3 {
        let dest = dir.path().join(format!("copy{i}.pheap"));
        let t = Instant::now();
        heap.copy_to(&dest).unwrap();
        copies.push(size / t.elapsed().as_secs_f64() / (1 << 20) as f64);
        std::fs::remove_file(&dest).unwrap();
        let dest = dir.path().join(format!("plain{i}"));
        let t = Instant::now();
        std::fs::copy(&path, &dest).unwrap();
        std::fs::File::open(&dest).unwrap().sync_all().unwrap();
        plain.push(size / t.elapsed().as_secs_f64() / (1 << 20) as f64);
        std::fs::remove_file(&dest).unwrap();
    }
    let (c, p) = (median(copies), median(plain));
    println!("copy_to {c:.0} MiB/s of source file, plain copy + fsync {p:.0} MiB/s: {:.2}x", c / p);

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
