//! The commit path, pheap alone (criterion): single-key commits durable and not, and durable
//! single-key commits by 1, 2, 4 and 8 threads of one handle at once (group commit, DESIGN
//! §4.3), on a heap of PHEAP_BENCH_N entries (default 100,000) in `target/` (a real disk, so
//! syncs cost what they cost).
//!
//! ```text
//! cargo bench --bench commit
//! ```

use pheap::prelude::*;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use pheap::{Durability, Heap};

fn key(i: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    k[8..16].copy_from_slice(&i.to_le_bytes());
    k
}

fn benches(c: &mut Criterion) {
    let n: u64 =
        std::env::var("PHEAP_BENCH_N").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    std::fs::create_dir_all("target").unwrap();
    let dir = tempfile::tempdir_in("target").unwrap();
    let heap = Heap::open(dir.path().join("commit.pheap")).unwrap();
    let mut tx = heap.begin_write().unwrap();
    tx.insert_many((0..n).map(|i| (key(i), [7u8; 150]))).unwrap();
    tx.commit().unwrap();

    let mut g = c.benchmark_group(format!("commit-{n}"));
    g.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_secs(5));
    let mut counter = 0u64;
    for (name, durability) in [("durable", Durability::Immediate), ("no_sync", Durability::None)] {
        g.bench_function(format!("100_single_key_commits_{name}"), |b| {
            b.iter(|| {
                for _ in 0..100 {
                    counter += 1;
                    let mut tx = heap.begin_write().unwrap();
                    tx.set_durability(durability);
                    tx.insert(key(counter % n), [counter as u8; 150]).unwrap();
                    tx.commit().unwrap();
                }
            })
        });
    }
    heap.checkpoint().unwrap();
    for threads in [1u64, 2, 4, 8] {
        // 200 durable single-key commits in all, shared among the threads.
        g.bench_function(format!("200_durable_commits_on_{threads}_threads"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for it in 0..iters {
                    let t = Instant::now();
                    std::thread::scope(|s| {
                        for th in 0..threads {
                            let heap = heap.clone();
                            s.spawn(move || {
                                for j in 0..200 / threads {
                                    let i = (it * 1000 + th * 200 + j) % n;
                                    let mut tx = heap.begin_write().unwrap();
                                    tx.insert(key(i), [j as u8; 150]).unwrap();
                                    tx.commit().unwrap();
                                }
                            });
                        }
                    });
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(commit, benches);
criterion_main!(commit);
