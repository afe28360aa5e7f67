//! Size under churn: a fixed live set overwritten and removed at random, reported over time.
//!
//! ```text
//! cargo run --release --example churn [-- KEYS ROUNDS DURABLE_EVERY]
//! ```

use pheap::prelude::*;
use pheap::{Durability, Heap};
use rand::{Rng, SeedableRng};

fn main() {
    let arg = |i: usize, d: u64| std::env::args().nth(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (keys, rounds, durable_every) = (arg(1, 100_000), arg(2, 200), arg(3, 1).max(1));
    let dir =
        tempfile::tempdir_in(std::env::var("PHEAP_DIR").unwrap_or_else(|_| ".".into())).unwrap();
    let heap = Heap::open(dir.path().join("churn.pheap")).unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0x9e37_79b9_7f4a_7c15);
    let mut rnd = move || rng.random::<u64>();
    let value = |r: u64| vec![r as u8; 20 + (r % 400) as usize];
    let mut tx = heap.begin_write().unwrap();
    for k in 0..keys {
        tx.insert(k.to_be_bytes(), value(rnd())).unwrap();
    }
    tx.commit().unwrap();
    println!("{:>6} {:>12} {:>12} {:>12} {:>7}", "round", "file", "live", "free", "ratio");
    for round in 0..=rounds {
        let mut tx = heap.begin_write().unwrap();
        for _ in 0..keys / 10 {
            let k = rnd() % keys;
            if rnd() % 4 == 0 {
                tx.remove(k.to_be_bytes()).unwrap();
                let k2 = rnd() % keys;
                tx.insert(k2.to_be_bytes(), value(rnd())).unwrap();
            } else {
                tx.insert(k.to_be_bytes(), value(rnd())).unwrap();
            }
        }
        tx.set_durability(if round % durable_every == 0 {
            Durability::Immediate
        } else {
            Durability::None
        });
        tx.commit().unwrap();
        if round % (rounds / 10).max(1) == 0 {
            let s = heap.stats().unwrap();
            println!(
                "{round:>6} {:>12} {:>12} {:>12} {:>7.3}",
                s.file_size,
                s.live_bytes,
                s.free_bytes,
                s.file_size as f64 / s.live_bytes as f64
            );
        }
    }
}
