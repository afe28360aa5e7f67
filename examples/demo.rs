//! Create a heap of 1,000,000 entries (24-byte keys, 150-byte values), commit it, reopen it in a
//! fresh process and report open time, lookup rate and file size.
//!
//! `cargo run --release --example demo [PATH] [ENTRIES]`

use pheap::prelude::*;
use std::process::Command;
use std::time::Instant;

use pheap::Heap;

/// splitmix64: a fixed-seed key stream both processes can regenerate.
struct Keys(u64);
impl Keys {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn key(&mut self) -> [u8; 24] {
        let mut k = [0u8; 24];
        for c in k.chunks_mut(8) {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        k
    }
}

fn value(key: &[u8; 24]) -> [u8; 150] {
    let mut v = [0u8; 150];
    for (i, b) in v.iter_mut().enumerate() {
        *b = key[i % 24].wrapping_add(i as u8);
    }
    v
}

fn main() -> pheap::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--reopen") {
        return reopen(&args[2], args[3].parse().expect("entries"));
    }
    let path = args.get(1).cloned().unwrap_or_else(|| "demo.pheap".into());
    let n: u64 = args.get(2).map_or(1_000_000, |s| s.parse().expect("entries"));
    let _ = std::fs::remove_file(&path);

    let t = Instant::now();
    let heap = Heap::open(&path)?;
    let mut tx = heap.begin_write()?;
    let mut keys = Keys(42);
    for _ in 0..n {
        let k = keys.key();
        tx.insert(k, value(&k))?;
    }
    let filled = t.elapsed();
    tx.commit()?;
    let committed = t.elapsed();
    let stats = heap.stats()?;
    drop(heap);
    println!("created {path}: {n} entries of 24+150 bytes");
    println!(
        "  fill {:.2} s ({:.2} us/entry), durable commit {:.1} ms",
        filled.as_secs_f64(),
        filled.as_secs_f64() * 1e6 / n as f64,
        (committed - filled).as_secs_f64() * 1e3
    );
    let raw = n * (24 + 150);
    println!(
        "  file {:.1} MiB for {:.1} MiB of keys and values ({:.2}x); in use {:.1} MiB, live {:.1} MiB",
        stats.file_size as f64 / 1048576.0,
        raw as f64 / 1048576.0,
        stats.file_size as f64 / raw as f64,
        stats.used_size as f64 / 1048576.0,
        stats.live_bytes as f64 / 1048576.0
    );

    let t = Instant::now();
    let out = Command::new(std::env::current_exe().expect("own path"))
        .args(["--reopen", &path, &n.to_string()])
        .output()
        .expect("spawn the reopening process");
    let total = t.elapsed();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    println!("  fresh process: spawn to exit {:.1} ms", total.as_secs_f64() * 1e3);
    if !out.status.success() {
        std::process::exit(1);
    }
    Ok(())
}

fn reopen(path: &str, n: u64) -> pheap::Result<()> {
    let t = Instant::now();
    let heap = Heap::options().read_only(true).open(path)?;
    let opened = t.elapsed();
    let rx = heap.begin_read()?;
    let mut keys = Keys(42);
    let first = keys.key();
    let v = rx.get(first)?.expect("first key present");
    assert_eq!(v, &value(&first)[..]);
    let first_get = t.elapsed();
    println!(
        "reopened in a fresh process: open {:.3} ms, open + first get {:.3} ms, {} entries",
        opened.as_secs_f64() * 1e3,
        first_get.as_secs_f64() * 1e3,
        rx.len()?
    );
    // Every key, in a shuffled order.
    let mut all: Vec<[u8; 24]> = std::iter::once(first).chain((1..n).map(|_| keys.key())).collect();
    let mut shuffle = Keys(7);
    for i in (1..all.len()).rev() {
        all.swap(i, (shuffle.next_u64() % (i as u64 + 1)) as usize);
    }
    let t = Instant::now();
    let mut bytes = 0usize;
    for k in &all {
        bytes += rx.get(k)?.expect("present").len();
    }
    let el = t.elapsed();
    assert_eq!(bytes as u64, 150 * n);
    println!(
        "  {} random lookups: {:.2} s, {:.2} M lookups/s ({:.3} us each)",
        n,
        el.as_secs_f64(),
        n as f64 / el.as_secs_f64() / 1e6,
        el.as_secs_f64() * 1e6 / n as f64
    );
    Ok(())
}
