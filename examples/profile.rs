//! Workloads for profiling: `cargo run --release --example profile -- load|nosync|durable|single|inproc|get PATH`
use pheap::{Durability, Heap};
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
    let t = std::time::Instant::now();
    match what {
        "load" => {
            let _ = std::fs::remove_file(path);
            let heap = Heap::open(path)?;
            let mut tx = heap.begin_write()?;
            for i in 0..n {
                tx.insert(&key(i), &[i as u8; 150])?;
            }
            tx.commit()?;
        }
        "nosync" => {
            let heap = Heap::open(path)?;
            for i in 0..200_000u64 {
                let mut tx = heap.begin_write()?;
                tx.set_durability(Durability::None);
                tx.insert(&key(i * 7 % n), &[3u8; 150])?;
                tx.commit()?;
                if i % 1000 == 999 {
                    heap.checkpoint()?;
                }
            }
        }
        "durable" | "single" => {
            // Single-key commits on a loaded heap: durable ones, or no-sync ones without a
            // checkpoint (the compare benchmark's two modes).
            let heap = Heap::open(path)?;
            let commits = std::env::var("COMMITS").map_or(2_000, |c| c.parse().expect("COMMITS"));
            for i in 0..commits {
                let mut tx = heap.begin_write()?;
                if what == "single" {
                    tx.set_durability(Durability::None);
                }
                tx.insert(&key(n + i), &[5u8; 150])?;
                tx.commit()?;
            }
        }
        "inproc" => {
            // Load and then no-sync single-key commits in one process, as the peer benchmark
            // does (no fresh mapping to fault in): `perf record -D 2000` skips the load.
            let _ = std::fs::remove_file(path);
            let heap = Heap::options().durability(Durability::None).open(path)?;
            let mut tx = heap.begin_write()?;
            for i in 0..n {
                tx.insert(&key(i), &[i as u8; 150])?;
            }
            tx.commit()?;
            let commits = std::env::var("COMMITS").map_or(200_000, |c| c.parse().expect("COMMITS"));
            let t = std::time::Instant::now();
            for i in 0..commits {
                let mut tx = heap.begin_write()?;
                tx.insert(&key(n + i), &[5u8; 150])?;
                tx.commit()?;
            }
            println!(
                "{:.2} us per no-sync commit",
                t.elapsed().as_secs_f64() * 1e6 / commits as f64
            );
        }
        "get" => {
            let heap = Heap::open(path)?;
            let rx = heap.begin_read()?;
            let mut sum = 0;
            for i in 0..3 * n {
                sum += rx.get(&key(i.wrapping_mul(7919) % n))?.map_or(0, |v| v.len());
            }
            assert!(sum > 0);
        }
        _ => panic!("load | nosync | durable | single | inproc | get"),
    }
    println!("{what}: {:.3} s", t.elapsed().as_secs_f64());
    Ok(())
}
