//! N reader processes against N reader threads on one heap (issue: many processes, one heap).
//!
//! The standard workload's heap (PHEAP_BENCH_N entries, default 1,000,000, 24-byte keys and
//! 150-byte values). Each reader first walks every entry (so its page tables are populated, as a
//! long-running reader's are), then, for PHEAP_BENCH_SECS seconds (default 3), runs read
//! transactions of PHEAP_BENCH_LOOKUPS random lookups each (default 100; 1 measures the
//! transaction's own cost). Threads share one `Heap`; processes each open their own. Reported:
//! aggregate lookups per second (median of PHEAP_BENCH_ROUNDS alternating runs, default 3), and
//! processes / threads for each reader count in PHEAP_BENCH_READERS (default 1,2,4,8,16).
//!
//! ```text
//! cargo bench --bench readers
//! PHEAP_BENCH_LOOKUPS=1 PHEAP_BENCH_READERS=1,2,4,8 cargo bench --bench readers
//! ```

use pheap::prelude::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use pheap::{Durability, Heap};

const WORKER: &str = "PHEAP_READERS_WORKER";

/// `key:` and `i` in 20 zero-padded digits, made without allocating (an allocation per lookup
/// made the threads contend in malloc, which processes do not).
fn key(mut i: u64) -> [u8; 24] {
    let mut k = [b'0'; 24];
    k[..4].copy_from_slice(b"key:");
    for d in k[4..].iter_mut().rev() {
        *d = b'0' + (i % 10) as u8;
        i /= 10;
    }
    k
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Walk every entry once.
fn warm(heap: &Heap) {
    let rx = heap.begin_read().unwrap();
    let n: usize = rx.iter().map(|r| r.unwrap().1.bytes().unwrap().len()).sum();
    assert!(n > 0);
}

/// Read transactions of PHEAP_BENCH_LOOKUPS (default 100) random lookups until `deadline`;
/// returns the lookups done.
fn lookups(heap: &Heap, n: u64, seed: u64, deadline: Instant) -> u64 {
    let per_txn = env("PHEAP_BENCH_LOOKUPS", 100);
    let mut x = seed | 1;
    let mut done = 0;
    while Instant::now() < deadline {
        let rx = heap.begin_read().unwrap();
        for _ in 0..per_txn {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            assert_eq!(rx.get(key(x % n)).unwrap().unwrap().len(), 150);
        }
        done += per_txn;
    }
    done
}

fn worker(path: &str) {
    let n = env("PHEAP_BENCH_N", 1_000_000);
    let secs = env("PHEAP_BENCH_SECS", 3);
    let heap = Heap::open(path).unwrap();
    warm(&heap);
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    println!("done {}", lookups(&heap, n, u64::from(std::process::id()), deadline));
}

fn threads(heap: &Heap, n: u64, readers: usize, secs: u64) -> f64 {
    let barrier = Arc::new(Barrier::new(readers + 1));
    let total: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..readers)
            .map(|t| {
                let (heap, barrier) = (heap.clone(), barrier.clone());
                s.spawn(move || {
                    warm(&heap);
                    barrier.wait();
                    let deadline = Instant::now() + Duration::from_secs(secs);
                    lookups(&heap, n, 0x1234_5678 + t as u64 * 7919, deadline)
                })
            })
            .collect();
        barrier.wait();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total as f64 / secs as f64
}

fn processes(path: &std::path::Path, readers: usize, secs: u64) -> f64 {
    let mut children: Vec<_> = (0..readers)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .env(WORKER, path)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut outs: Vec<_> = children
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().unwrap()).lines().map_while(|l| l.ok()))
        .collect();
    for out in &mut outs {
        assert_eq!(out.next().as_deref(), Some("ready"));
    }
    for c in &mut children {
        writeln!(c.stdin.as_mut().unwrap(), "go").unwrap();
    }
    let mut total = 0u64;
    for out in &mut outs {
        let line = out.next().unwrap();
        total += line.strip_prefix("done ").unwrap().parse::<u64>().unwrap();
    }
    for c in &mut children {
        assert!(c.wait().unwrap().success());
    }
    total as f64 / secs as f64
}

fn main() {
    if let Ok(path) = std::env::var(WORKER) {
        return worker(&path);
    }
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` and `--list` probes: nothing to list or test here.
    }
    let n = env("PHEAP_BENCH_N", 1_000_000);
    let secs = env("PHEAP_BENCH_SECS", 3);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("readers.pheap");
    let heap = Heap::options().durability(Durability::None).open(&path).unwrap();
    let value = [0x5au8; 150];
    for chunk in (0..n).collect::<Vec<_>>().chunks(100_000) {
        let mut tx = heap.begin_write().unwrap();
        for &i in chunk {
            tx.insert(key(i), value).unwrap();
        }
        tx.commit().unwrap();
    }
    heap.checkpoint().unwrap();
    println!(
        "{n} entries, read transactions of {} random lookups, median of {} alternating runs of {secs} s",
        env("PHEAP_BENCH_LOOKUPS", 100),
        env("PHEAP_BENCH_ROUNDS", 3)
    );
    println!(
        "{:>8} {:>16} {:>16} {:>18}",
        "readers", "threads M/s", "processes M/s", "processes/threads"
    );
    // The machine is shared and noisy: alternate the two kinds, take each one's median.
    let rounds = env("PHEAP_BENCH_ROUNDS", 3) as usize;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let counts = std::env::var("PHEAP_BENCH_READERS").unwrap_or_else(|_| "1,2,4,8,16".into());
    for readers in counts.split(',').map(|c| c.trim().parse::<usize>().expect("reader counts")) {
        let (mut ts, mut ps) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            // PHEAP_BENCH_ONLY=threads|processes runs one kind (to profile it).
            let only = std::env::var("PHEAP_BENCH_ONLY").unwrap_or_default();
            ts.push(if only == "processes" { f64::NAN } else { threads(&heap, n, readers, secs) });
            ps.push(if only == "threads" { f64::NAN } else { processes(&path, readers, secs) });
        }
        let (t, p) = (median(ts), median(ps));
        println!("{readers:>8} {:>16.3} {:>16.3} {:>18.3}", t / 1e6, p / 1e6, p / t);
    }
}
