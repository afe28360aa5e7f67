//! Ten processes share one heap of more than a gigabyte: how much memory do they use together?
//!
//! Builds a heap (default 5,000,000 entries of 24-byte keys and 200-byte values, about 1.3 GiB),
//! then runs 1 reader process, then 10 at once. Each reader opens the heap read-only, touches every
//! entry once (so its whole working set is mapped), then does random lookups until told to stop.
//! While they run, the proportional set size (PSS, `/proc/<pid>/smaps_rollup`) of each is read:
//! shared pages are split among the processes mapping them, so the PSS total is what the group
//! really costs. For comparison the parent loads the same data into a `HashMap`, which is what
//! each process would hold if it loaded its own copy.
//!
//! ```text
//! cargo run --release --example shared_readers [-- ENTRIES [READERS [SECONDS]]]
//! ```

use pheap::prelude::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pheap::{Durability, Heap};

const WORKER: &str = "PHEAP_SHARED_READER";

fn key(i: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..4].copy_from_slice(b"key:");
    k[4..24].copy_from_slice(format!("{i:020}").as_bytes());
    k
}

fn value(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..200)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A field of `/proc/<pid>/smaps_rollup` or `/proc/<pid>/status`, in KiB.
fn proc_kib(pid: u32, file: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A reader process: open, touch everything, say "ready", look up random keys until stdin
/// closes, report the count.
fn worker(path: &str, entries: u64) {
    let heap = Heap::options().read_only(true).open(path).unwrap();
    let rx = heap.begin_read().unwrap();
    let touched: usize = rx.iter().map(|r| r.unwrap().1.bytes().unwrap().len()).sum();
    assert_eq!(touched as u64, entries * 200);
    println!("ready");
    std::io::stdout().flush().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        s.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let mut x = u64::from(std::process::id()) | 1;
    let (mut n, start) = (0u64, Instant::now());
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = rx.get(key(x % entries)).unwrap().unwrap();
            assert_eq!(v.len(), 200);
        }
        n += 1000;
    }
    println!("lookups {n} {:.3}", start.elapsed().as_secs_f64());
}

struct Run {
    pss_kib: Vec<u64>,
    rss_kib: Vec<u64>,
    lookups: u64,
    secs: f64,
}

fn run_readers(path: &std::path::Path, entries: u64, readers: usize, secs: u64) -> Run {
    let mut children: Vec<Child> = (0..readers)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .env(WORKER, path)
                .env("PHEAP_SHARED_ENTRIES", entries.to_string())
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
    std::thread::sleep(Duration::from_secs(secs));
    let pss_kib = children.iter().map(|c| proc_kib(c.id(), "smaps_rollup", "Pss:")).collect();
    let rss_kib = children.iter().map(|c| proc_kib(c.id(), "smaps_rollup", "Rss:")).collect();
    for c in &mut children {
        drop(c.stdin.take());
    }
    let (mut lookups, mut secs) = (0, 0.0f64);
    for out in &mut outs {
        let line = out.next().expect("a report");
        let mut f = line.split_whitespace().skip(1);
        lookups += f.next().unwrap().parse::<u64>().unwrap();
        secs = secs.max(f.next().unwrap().parse().unwrap());
    }
    for c in &mut children {
        assert!(c.wait().unwrap().success());
    }
    Run { pss_kib, rss_kib, lookups, secs }
}

fn main() {
    let arg = |i: usize, default: u64| {
        std::env::args().nth(i).and_then(|s| s.parse().ok()).unwrap_or(default)
    };
    if let Ok(path) = std::env::var(WORKER) {
        let entries = std::env::var("PHEAP_SHARED_ENTRIES").unwrap().parse().unwrap();
        return worker(&path, entries);
    }
    let (entries, readers, secs) = (arg(1, 5_000_000), arg(2, 10) as usize, arg(3, 5));
    let dir = tempfile::tempdir_in(std::env::var("PHEAP_DIR").unwrap_or_else(|_| ".".into()))
        .expect("a temporary directory (set PHEAP_DIR to choose where)");
    let path = dir.path().join("shared.pheap");

    let t = Instant::now();
    let heap = Heap::options().durability(Durability::None).open(&path).unwrap();
    for chunk in (0..entries).collect::<Vec<_>>().chunks(100_000) {
        let mut tx = heap.begin_write().unwrap();
        for &i in chunk {
            tx.insert(key(i), value(i)).unwrap();
        }
        tx.commit().unwrap();
    }
    heap.checkpoint().unwrap();
    let heap_kib = heap.stats().unwrap().file_size / 1024;
    drop(heap);
    println!(
        "heap: {entries} entries, {:.0} MiB file, built in {:.1} s",
        mib(heap_kib),
        t.elapsed().as_secs_f64()
    );

    let one = run_readers(&path, entries, 1, secs);
    let many = run_readers(&path, entries, readers, secs);
    println!("\n1 reader: PSS {:.0} MiB (RSS {:.0} MiB)", mib(one.pss_kib[0]), mib(one.rss_kib[0]));
    println!("{readers} readers at once:");
    for (i, (p, r)) in many.pss_kib.iter().zip(&many.rss_kib).enumerate() {
        println!("  reader {i}: PSS {:7.1} MiB  RSS {:7.1} MiB", mib(*p), mib(*r));
    }
    let total: u64 = many.pss_kib.iter().sum();
    println!(
        "  total PSS {:.0} MiB = {:.2}x one reader, {:.2}x the heap file",
        mib(total),
        total as f64 / one.pss_kib[0] as f64,
        total as f64 / heap_kib as f64
    );
    println!(
        "  lookups: {:.2} M/s aggregate ({:.2} M/s for 1 reader)",
        many.lookups as f64 / many.secs / 1e6,
        one.lookups as f64 / one.secs / 1e6
    );

    // What one process holds when it loads its own copy.
    let before = proc_kib(std::process::id(), "status", "VmRSS:");
    let heap = Heap::options().read_only(true).open(&path).unwrap();
    let map: HashMap<Vec<u8>, Vec<u8>> = {
        let rx = heap.begin_read().unwrap();
        rx.iter()
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.bytes().unwrap().to_vec())).unwrap())
            .collect()
    };
    drop(heap);
    let copy = proc_kib(std::process::id(), "status", "VmRSS:").saturating_sub(before);
    println!(
        "\na loaded HashMap copy: {:.0} MiB per process; {readers} copies would be {:.0} MiB = {:.1}x the {readers} pheap readers' total",
        mib(copy),
        mib(copy * readers as u64),
        (copy * readers as u64) as f64 / total as f64
    );
    drop(map);
}
