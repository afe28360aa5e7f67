//! The cost of a point read on the standard workload (1M keys of 24 bytes, 150-byte values),
//! for A/B comparisons of read-path changes between two builds on one heap file:
//!
//! `cargo run --release --example readcost -- load PATH` once, then
//! `cargo run --release --example readcost -- get PATH` (repeat, alternating builds).
//!
//! `open` opens the heap, gets one key and closes it, 2000 times, and prints the time of one.
//! `get` reads every key once in shuffled order, five passes, and prints the fastest pass per
//! lookup twice: taking only the value's length, and summing its bytes (a caller that uses the
//! value).
use pheap::Heap;

fn key(i: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    let mut s = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for c in k.chunks_mut(8) {
        s ^= s >> 31;
        s = s.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        c.copy_from_slice(&s.to_le_bytes());
    }
    k
}

fn main() -> pheap::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (what, path) = (args[1].as_str(), args[2].as_str());
    let n = 1_000_000u64;
    if what == "load" {
        let _ = std::fs::remove_file(path);
        let heap = Heap::open(path)?;
        let mut tx = heap.begin_write()?;
        for i in 0..n {
            tx.insert(&key(i), &[i as u8; 150])?;
        }
        return tx.commit();
    }
    if what == "open" {
        // Open, one get, close: the handle's whole life, 2000 times; the fastest of 5 rounds.
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            for i in 0..2000u64 {
                let heap = Heap::options().create(false).open(path)?;
                std::hint::black_box(heap.begin_read()?.get(&key(i))?.map(|v| v.len()));
            }
            best = best.min(t.elapsed().as_secs_f64() * 1e6 / 2000.0);
        }
        println!("open, get, close: {best:.1} us");
        return Ok(());
    }
    let keys: Vec<[u8; 24]> = (0..n).map(|i| key(i.wrapping_mul(7919) % n)).collect();
    let heap = Heap::options().create(false).open(path)?;
    let rx = heap.begin_read()?;
    for touch in [false, true] {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let mut sum = 0u64;
            for k in &keys {
                let v = rx.get(k)?.expect("present");
                sum +=
                    if touch { v.iter().map(|&b| b as u64).sum::<u64>() } else { v.len() as u64 };
            }
            std::hint::black_box(sum);
            best = best.min(t.elapsed().as_secs_f64() * 1e9 / n as f64);
        }
        println!("{}: {best:.0} ns per get", if touch { "value read" } else { "length only" });
    }
    Ok(())
}
