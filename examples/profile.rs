//! Workloads for profiling: `cargo run --release --example profile -- load|loadmany|bulkcost|nosync|durable|single|inproc|get|fresh|prefetch|readcost|itercost|txncost|objload|objcost|opencost|floor PATH`
//!
//! `readcost` and `opencost` are for A/B comparisons of two builds on one heap file (made by
//! `load`), run alternately: `readcost` reads every key once in shuffled order, five passes, and
//! prints the fastest pass per lookup, taking only the value's length and then summing its bytes;
//! `itercost` walks every entry (`iter()`), five passes, and prints the fastest per entry;
//! `opencost` opens the heap, gets one key and closes it, 2000 times, fastest of 5 rounds;
//! `bulkcost` times the peer benchmark's bulk load (durable) beside its HashMap, 3 rounds;
//! `fresh` opens it read-only and makes 100,000 gets (`prefetch`: after `Heap::prefetch`), once,
//! printing the time and how much of the file the process maps in 2 MiB pages; `floor` prints
//! what a dependent load over 256 MiB costs (4 KiB and 2 MiB pages) and a HashMap's get of the
//! same entries, readcost's reference.
use pheap::prelude::*;
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
                tx.insert(key(i), [i as u8; 150])?;
            }
            tx.commit()?;
        }
        "loadmany" => {
            // As `load`, through insert_many (the batch sorted by hash first).
            let _ = std::fs::remove_file(path);
            let heap = Heap::open(path)?;
            let batch: Vec<([u8; 24], [u8; 150])> =
                (0..n).map(|i| (key(i), [i as u8; 150])).collect();
            let t = std::time::Instant::now();
            let mut tx = heap.begin_write()?;
            tx.insert_many(batch)?;
            tx.commit()?;
            println!("insert_many + commit: {:.3} s", t.elapsed().as_secs_f64());
        }
        "bulkcost" => {
            // The peer benchmark's bulk load, beside its reference in the same process: a fresh
            // durable heap takes 1M entries in one `insert_many` (a batch of (&[u8], Vec<u8>),
            // values made as the batch is), against a HashMap<Box<[u8]>, Box<[u8]>> of the same.
            let keys: Vec<[u8; 24]> = (0..n).map(key).collect();
            let value = |i: usize| [i as u8; 150];
            for round in 0..3 {
                let t = std::time::Instant::now();
                let mut m: std::collections::HashMap<Box<[u8]>, Box<[u8]>> = Default::default();
                for (i, k) in keys.iter().enumerate() {
                    m.insert(k[..].into(), value(i)[..].into());
                }
                let map = t.elapsed().as_secs_f64();
                drop(m);
                let _ = std::fs::remove_file(path);
                let heap = Heap::open(path)?;
                let t = std::time::Instant::now();
                let mut tx = heap.begin_write()?;
                let batch: Vec<(&[u8], Vec<u8>)> =
                    keys.iter().enumerate().map(|(i, k)| (&k[..], value(i).to_vec())).collect();
                tx.insert_many(batch)?;
                tx.commit()?;
                let load = t.elapsed().as_secs_f64();
                println!(
                    "round {round}: pheap {load:.3} s, HashMap {map:.3} s, {:.2}x",
                    load / map
                );
            }
            return Ok(());
        }
        "nosync" => {
            let heap = Heap::open(path)?;
            for i in 0..200_000u64 {
                let mut tx = heap.begin_write()?;
                tx.set_durability(Durability::None);
                tx.insert(key(i * 7 % n), [3u8; 150])?;
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
                tx.insert(key(n + i), [5u8; 150])?;
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
                tx.insert(key(i), [i as u8; 150])?;
            }
            tx.commit()?;
            let commits = std::env::var("COMMITS").map_or(200_000, |c| c.parse().expect("COMMITS"));
            let t = std::time::Instant::now();
            for i in 0..commits {
                let mut tx = heap.begin_write()?;
                tx.insert(key(n + i), [5u8; 150])?;
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
                sum += rx.get(key(i.wrapping_mul(7919) % n))?.map_or(0, |v| v.len());
            }
            assert!(sum > 0);
        }
        "fresh" | "prefetch" => {
            // A fresh process's open (read-only), `prefetch` first for "prefetch", then 100,000
            // gets in shuffled order; and how much of the file this process maps with 2 MiB
            // page-table entries (`FilePmdMapped`: pages the page cache holds in 2 MiB folios).
            let keys: Vec<[u8; 24]> =
                (0..100_000u64).map(|i| key(i.wrapping_mul(7919) % n)).collect();
            let t = std::time::Instant::now();
            let heap = Heap::options().create(false).read_only(true).open(path)?;
            if what == "prefetch" {
                heap.prefetch()?;
                print!("open + prefetch {:.1} ms, ", t.elapsed().as_secs_f64() * 1e3);
            }
            let rx = heap.begin_read()?;
            let t2 = std::time::Instant::now();
            let mut sum = 0u64;
            for k in &keys {
                sum += rx.get(k)?.expect("present").len() as u64;
            }
            std::hint::black_box(sum);
            let elapsed = t.elapsed();
            print!("gets {:.1} ms, ", t2.elapsed().as_secs_f64() * 1e3);
            let smaps = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
            let pmd = smaps.lines().find(|l| l.starts_with("FilePmdMapped")).unwrap_or("");
            println!(
                "open + 100k gets {:.1} ms; {}",
                elapsed.as_secs_f64() * 1e3,
                pmd.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            return Ok(());
        }
        "readcost" => {
            let keys: Vec<[u8; 24]> = (0..n).map(|i| key(i.wrapping_mul(7919) % n)).collect();
            let heap = Heap::options().create(false).open(path)?;
            let rx = heap.begin_read()?;
            for touch in [false, true] {
                let best = fastest_of_5(|| {
                    let mut sum = 0u64;
                    for k in &keys {
                        let v = rx.get(k)?.expect("present");
                        sum +=
                            if touch { v.iter().map(|&b| b as u64).sum() } else { v.len() as u64 };
                    }
                    std::hint::black_box(sum);
                    Ok(())
                })?;
                let what = if touch { "value read" } else { "length only" };
                println!("{what}: {:.0} ns per get", best * 1e9 / n as f64);
            }
            return Ok(());
        }
        "itercost" => {
            let heap = Heap::options().create(false).open(path)?;
            let rx = heap.begin_read()?;
            let best = fastest_of_5(|| {
                let mut sum = 0u64;
                for item in rx.iter() {
                    let (k, v) = item?;
                    sum += u64::from(k[0]) + v.bytes()?.len() as u64;
                }
                std::hint::black_box(sum);
                Ok(())
            })?;
            println!("iter: {:.1} ns per entry", best * 1e9 / n as f64);
            return Ok(());
        }
        "txncost" => {
            // A read transaction per lookup, as a Python `d[k]` pays it: begin_read, one get,
            // drop. `hot`: the same key every time (the transaction's own cost); `random`: keys
            // in shuffled order (plus the lookup's cache misses).
            let heap = Heap::options().create(false).open(path)?;
            let keys: Vec<[u8; 24]> = (0..n).map(|i| key(i.wrapping_mul(7919) % n)).collect();
            for hot in [true, false] {
                let best = fastest_of_5(|| {
                    let mut sum = 0u64;
                    for (i, k) in keys.iter().enumerate().take(1_000_000) {
                        let k = if hot { &keys[i % 8] } else { k };
                        let rx = heap.begin_read()?;
                        sum += rx.get(k)?.expect("present").len() as u64;
                    }
                    std::hint::black_box(sum);
                    Ok(())
                })?;
                let what = if hot { "hot key" } else { "random keys" };
                let ops = n.min(1_000_000) as f64;
                println!("begin_read + get + drop, {what}: {:.0} ns", best * 1e9 / ops);
            }
            let rx = heap.begin_read()?;
            let best = fastest_of_5(|| {
                let mut sum = 0u64;
                for i in 0..1_000_000 {
                    sum += rx.get(keys[i % 8])?.expect("present").len() as u64;
                }
                std::hint::black_box(sum);
                Ok(())
            })?;
            println!("get alone (one transaction), hot key: {:.0} ns", best * 1e3);
            return Ok(());
        }
        "objcost" => {
            // The object model's read costs on a heap of 1M entries at the top level and the
            // same 1M in sub-map "m" (made by `objload`): random gets at the top level, in the
            // sub-map (looked up once, and once per get), and get_as::<[u64]> against get.
            let heap = Heap::options().create(false).open(path)?;
            let rx = heap.begin_read()?;
            let keys: Vec<[u8; 24]> = (0..n).map(|i| key(i.wrapping_mul(7919) % n)).collect();
            let m = rx.map("m")?.expect("the sub-map");
            type Lookup<'a> = &'a dyn Fn(&[u8; 24]) -> pheap::Result<usize>;
            let cases: [(&str, Lookup<'_>); 5] = [
                ("top level, get", &|k| Ok(rx.get(k)?.expect("present").len())),
                ("sub-map, get", &|k| Ok(m.get(k)?.expect("present").len())),
                ("sub-map looked up per get", &|k| {
                    Ok(rx.map("m")?.expect("map").get(k)?.expect("present").len())
                }),
                ("top level, get_as::<[u64]>", &|k| {
                    Ok(rx.get_as::<[u64]>(k)?.expect("present").len())
                }),
                ("top level, get again", &|k| Ok(rx.get(k)?.expect("present").len())),
            ];
            for (what, f) in cases {
                let best = fastest_of_5(|| {
                    let mut sum = 0usize;
                    for k in &keys {
                        sum += f(k)?;
                    }
                    std::hint::black_box(sum);
                    Ok(())
                })?;
                println!("{what}: {:.0} ns per lookup", best * 1e9 / n as f64);
            }
            return Ok(());
        }
        "objload" => {
            let _ = std::fs::remove_file(path);
            let heap = Heap::open(path)?;
            let batch: Vec<([u8; 24], [u8; 160])> =
                (0..n).map(|i| (key(i), [i as u8; 160])).collect();
            let mut tx = heap.begin_write()?;
            tx.insert_many(batch.iter().map(|(k, v)| (k, v)))?;
            tx.map_mut("m")?.insert_many(batch.iter().map(|(k, v)| (k, v)))?;
            tx.commit()?;
        }
        "floor" => {
            // What a lookup costs at best on this machine, for readcost's figures: a chain of
            // dependent loads over 256 MiB (one per random cache line; the memory in 4 KiB
            // pages, then in 2 MiB ones), and a HashMap<Vec<u8>, Vec<u8>> of the same keys and
            // values as `load` makes, read in readcost's order. PATH is not used.
            for huge in [false, true] {
                println!(
                    "dependent load, {} pages: {:.0} ns",
                    if huge { "2 MiB" } else { "4 KiB" },
                    chase(256 << 20, huge) * 1e9
                );
            }
            let mut m = std::collections::HashMap::new();
            for i in 0..n {
                m.insert(key(i).to_vec(), vec![i as u8; 150]);
            }
            let keys: Vec<[u8; 24]> = (0..n).map(|i| key(i.wrapping_mul(7919) % n)).collect();
            let best = fastest_of_5(|| {
                let sum: usize = keys.iter().map(|k| m.get(&k[..]).expect("present").len()).sum();
                std::hint::black_box(sum);
                Ok(())
            })?;
            println!("HashMap: {:.0} ns per get (length only)", best * 1e9 / n as f64);
            return Ok(());
        }
        "opencost" => {
            let best = fastest_of_5(|| {
                for i in 0..2000u64 {
                    let heap = Heap::options().create(false).open(path)?;
                    std::hint::black_box(heap.begin_read()?.get(key(i))?.map(|v| v.len()));
                }
                Ok(())
            })?;
            println!("open, get, close: {:.1} us", best * 1e6 / 2000.0);
            return Ok(());
        }
        _ => panic!("unknown mode {what}: see the header of examples/profile.rs"),
    }
    println!("{what}: {:.3} s", t.elapsed().as_secs_f64());
    Ok(())
}

/// Seconds per load of a chain of dependent loads, one per cache line of `bytes` of fresh
/// anonymous memory in random order (one cycle through every line), the memory advised to take
/// 2 MiB pages (`huge`) or not to.
fn chase(bytes: usize, huge: bool) -> f64 {
    const LINE: usize = 64;
    let lines = bytes / LINE;
    let mut map = memmap2::MmapMut::map_anon(bytes).expect("an anonymous mapping");
    let advice = if huge { memmap2::Advice::HugePage } else { memmap2::Advice::NoHugePage };
    map.advise(advice).expect("madvise");
    let words: &mut [u64] = zerocopy::FromBytes::mut_from_bytes(&mut map[..]).expect("aligned");
    // Sattolo's shuffle: one cycle through every line.
    let mut order: Vec<u32> = (0..lines as u32).collect();
    let mut s = 0x2545_f491_4f6c_dd1du64;
    for i in (1..lines).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        order.swap(i, (s % i as u64) as usize);
    }
    for (i, &next) in order.iter().enumerate() {
        words[i * LINE / 8] = u64::from(next);
    }
    let best = fastest_of_5(|| {
        let mut at = 0usize;
        for _ in 0..lines {
            at = words[at * LINE / 8] as usize;
        }
        std::hint::black_box(at);
        Ok(())
    })
    .expect("no error");
    best / lines as f64
}

/// Seconds of the fastest of five runs of `f`.
fn fastest_of_5(mut f: impl FnMut() -> pheap::Result<()>) -> pheap::Result<f64> {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}
