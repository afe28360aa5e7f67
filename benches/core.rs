//! The standard workload (random 24-byte keys, 150-byte values) on pheap, with an in-memory
//! `std::collections::HashMap` measured in the same run as the physical limit.
//!
//! `cargo bench --bench core` (PHEAP_BENCH_N=100000 for a quick run). File sizes are printed
//! and written to `target/pheap-bench-sizes.txt`.

use pheap::prelude::*;
use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use pheap::{Durability, Heap};

struct Data {
    keys: Vec<[u8; 24]>,
    values: Vec<[u8; 150]>,
    shuffled: Vec<usize>,
}

fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn data() -> Data {
    let n: usize =
        std::env::var("PHEAP_BENCH_N").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let mut s = 1;
    let mut keys = Vec::with_capacity(n);
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        let mut k = [0u8; 24];
        k.chunks_mut(8).for_each(|c| c.copy_from_slice(&splitmix(&mut s).to_le_bytes()));
        let mut v = [0u8; 150];
        v.chunks_mut(8).for_each(|c| c.copy_from_slice(&splitmix(&mut s).to_le_bytes()[..c.len()]));
        keys.push(k);
        values.push(v);
    }
    let mut shuffled: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        shuffled.swap(i, (splitmix(&mut s) % (i as u64 + 1)) as usize);
    }
    Data { keys, values, shuffled }
}

fn bench_dir() -> tempfile::TempDir {
    // On the project's disk (not a tmpfs) so that syncs cost what they cost.
    std::fs::create_dir_all("target").unwrap();
    tempfile::tempdir_in("target").unwrap()
}

fn load(path: &PathBuf, d: &Data) -> Heap {
    let heap = Heap::open(path).unwrap();
    let mut tx = heap.begin_write().unwrap();
    for (k, v) in d.keys.iter().zip(&d.values) {
        tx.insert(k, v).unwrap();
    }
    tx.commit().unwrap();
    heap
}

fn benches(c: &mut Criterion) {
    let d = data();
    let n = d.keys.len();
    let dir = bench_dir();
    let mut sizes = Vec::new();

    let mut g = c.benchmark_group(format!("standard-{n}"));
    g.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_secs(5));

    g.bench_function("bulk_load/pheap", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let path = dir.path().join(format!("load-{i}.pheap"));
                let t = Instant::now();
                let heap = load(&path, &d);
                total += t.elapsed();
                drop(heap);
                std::fs::remove_file(&path).unwrap();
            }
            total
        })
    });
    g.bench_function("bulk_load/hashmap", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let mut m: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
                for (k, v) in d.keys.iter().zip(&d.values) {
                    m.insert(k.to_vec(), v.to_vec());
                }
                total += t.elapsed();
                black_box(&m);
            }
            total
        })
    });

    let path = dir.path().join("main.pheap");
    let heap = load(&path, &d);
    sizes.push(("after bulk load", heap.stats().unwrap()));
    let map: HashMap<Vec<u8>, Vec<u8>> =
        d.keys.iter().zip(&d.values).map(|(k, v)| (k.to_vec(), v.to_vec())).collect();

    // Every key once, in shuffled order, split over `threads` threads, each with its own read
    // transaction; the same code for 1 and 2 threads.
    let gets = |threads: usize| {
        std::thread::scope(|s| {
            for part in d.shuffled.chunks(n.div_ceil(threads)) {
                let (heap, d) = (&heap, &d);
                s.spawn(move || {
                    let rx = heap.begin_read().unwrap();
                    let mut sum = 0usize;
                    for &i in part {
                        sum += rx.get(d.keys[i]).unwrap().unwrap().len();
                    }
                    assert_eq!(sum, 150 * part.len());
                });
            }
        })
    };
    g.bench_function("random_get_all/pheap", |b| b.iter(|| gets(1)));
    let map_gets = |threads: usize| {
        std::thread::scope(|s| {
            for part in d.shuffled.chunks(n.div_ceil(threads)) {
                let (map, d) = (&map, &d);
                s.spawn(move || {
                    let mut sum = 0usize;
                    for &i in part {
                        sum += map.get(&d.keys[i][..]).unwrap().len();
                    }
                    assert_eq!(sum, 150 * part.len());
                });
            }
        })
    };
    g.bench_function("random_get_all/hashmap", |b| b.iter(|| map_gets(1)));
    // A read transaction per lookup: the registry's pin, fence and re-check on every one.
    g.bench_function("1000_read_txns_of_one_get/pheap", |b| {
        b.iter(|| {
            for &i in &d.shuffled[..1000] {
                let rx = heap.begin_read().unwrap();
                assert_eq!(rx.get(d.keys[i]).unwrap().unwrap().len(), 150);
            }
        })
    });
    g.bench_function("random_get_all_2_threads/hashmap", |b| b.iter(|| map_gets(2)));
    g.bench_function("random_get_all_2_threads/pheap", |b| b.iter(|| gets(2)));
    drop(map);

    let mut counter = 0u64;
    for (name, durability) in [("durable", Durability::Immediate), ("no_sync", Durability::None)] {
        g.bench_function(format!("1000_single_key_commits_{name}/pheap"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    for _ in 0..1000 {
                        counter += 1;
                        let i = (counter.wrapping_mul(0x9e37_79b9_7f4a_7c15) % n as u64) as usize;
                        let mut tx = heap.begin_write().unwrap();
                        tx.set_durability(durability);
                        tx.insert(d.keys[i], d.values[(i + 1) % n]).unwrap();
                        tx.commit().unwrap();
                    }
                    total += t.elapsed();
                    heap.checkpoint().unwrap(); // untimed; a no-op after durable commits
                }
                total
            })
        });
    }
    g.bench_function("100_commits_of_1000_keys_durable/pheap", |b| {
        b.iter(|| {
            for _ in 0..100 {
                let mut tx = heap.begin_write().unwrap();
                for _ in 0..1000 {
                    counter += 1;
                    let i = (counter.wrapping_mul(0x9e37_79b9_7f4a_7c15) % n as u64) as usize;
                    tx.insert(d.keys[i], d.values[(i + 7) % n]).unwrap();
                }
                tx.commit().unwrap();
            }
        })
    });
    heap.checkpoint().unwrap();
    sizes.push(("after the write phases", heap.stats().unwrap()));
    drop(heap);

    g.bench_function("remove_half/pheap", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let path = dir.path().join(format!("rm-{i}.pheap"));
                let heap = load(&path, &d);
                let t = Instant::now();
                let mut tx = heap.begin_write().unwrap();
                for k in d.keys.iter().step_by(2) {
                    assert!(tx.remove(k).unwrap());
                }
                tx.commit().unwrap();
                total += t.elapsed();
                if !sizes.iter().any(|s| s.0 == "after removing half") {
                    sizes.push(("after removing half", heap.stats().unwrap()));
                }
                drop(heap);
                std::fs::remove_file(&path).unwrap();
            }
            total
        })
    });
    g.finish();

    let raw = n as u64 * (24 + 150);
    let mut report = format!(
        "file sizes, {n} entries ({:.1} MiB of keys and values):\n",
        raw as f64 / 1048576.0
    );
    let mib = |b: u64| b as f64 / 1048576.0;
    for (what, s) in &sizes {
        report += &format!(
            "  {what}: file {:.1} MiB ({:.3}x raw), in use {:.1} MiB, live {:.1} MiB\n",
            mib(s.file_size),
            s.file_size as f64 / raw as f64,
            mib(s.used_size),
            mib(s.live_bytes)
        );
    }
    eprint!("{report}");
    std::fs::write("target/pheap-bench-sizes.txt", report).unwrap();
}

criterion_group!(core, benches);
criterion_main!(core);
