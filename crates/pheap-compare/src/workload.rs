//! The standard workload, run on one store in one fresh process (so that its peak memory is its
//! own): bulk load, single-key transactions, batches, len(), random reads on 1 and 2 threads,
//! removal of half the keys, and file sizes between.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::data::Data;
use crate::stores::Store;

pub const KEY_LEN: usize = 24;
pub const VALUE_LEN: usize = 150;
pub const SINGLES: usize = 1_000;
pub const BATCHES: usize = 100;
pub const BATCH: usize = 1_000;

/// Figures of one run: seconds for phases, bytes for sizes and memory.
pub type Figures = BTreeMap<String, f64>;

pub fn run<S: Store>(dir: &Path, durable: bool, n: usize) -> Figures {
    let total = n + SINGLES + BATCHES * BATCH;
    let data = Data::new(total, KEY_LEN, VALUE_LEN);
    let mut order: Vec<u32> = (0..total as u32).collect();
    order.shuffle(&mut rand::rngs::SmallRng::seed_from_u64(3));
    let baseline = reset_peak_rss();

    let mut out = Figures::new();
    let mut time = |name: &str, f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        out.insert(name.into(), t.elapsed().as_secs_f64());
    };

    let mut store = S::open(dir, durable);
    time("bulk_load", &mut || store.insert(&data, 0..n));
    let size_load = dir_size(dir);
    time("single", &mut || {
        for i in n..n + SINGLES {
            store.insert(&data, i..i + 1);
        }
    });
    let start = n + SINGLES;
    time("batch", &mut || {
        for b in 0..BATCHES {
            store.insert(&data, start + b * BATCH..start + (b + 1) * BATCH);
        }
    });
    let size_writes = dir_size(dir);
    let mut len = 0;
    time("len", &mut || len = store.len());
    assert_eq!(len, total as u64, "len after the writes");
    let mut found = 0;
    time("read_1t", &mut || found = store.read(&data, &order));
    assert_eq!(found, total as u64, "1-thread reads");
    let (left, right) = order.split_at(total / 2);
    time("read_2t", &mut || {
        let store = &store;
        let data = &data;
        found = std::thread::scope(|s| {
            let a = s.spawn(|| store.read(data, left));
            let b = store.read(data, right);
            a.join().unwrap() + b
        });
    });
    assert_eq!(found, total as u64, "2-thread reads");
    time("remove", &mut || store.remove(&data, 0..n / 2));
    assert_eq!(store.len(), (total - n / 2) as u64, "len after the removals");
    let size_removals = dir_size(dir);
    let peak = peak_rss();
    drop(store);

    out.insert("size_load".into(), size_load as f64);
    out.insert("size_writes".into(), size_writes as f64);
    out.insert("size_removals".into(), size_removals as f64);
    out.insert("rss".into(), peak.saturating_sub(baseline) as f64);
    out
}

/// Sum of the lengths of the files under `dir` (every file a store keeps: data, lock, log).
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() { dir_size(&entry.path()) } else { meta.len() };
    }
    total
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} missing from /proc/self/status"));
    line[field.len()..].trim().trim_end_matches("kB").trim().parse().unwrap()
}

/// Resets the process's peak RSS to its current RSS (`clear_refs` 5) and returns that, in bytes.
fn reset_peak_rss() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset peak RSS");
    status_kib("VmRSS:") * 1024
}

/// Peak RSS since the last reset, in bytes: anonymous memory and the file pages mapped.
fn peak_rss() -> u64 {
    status_kib("VmHWM:") * 1024
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stores::STORES;

    /// Every adapter runs the whole workload (its own asserts check len() and that every read
    /// finds the right value) and reports every figure; files shrink nowhere below the data.
    #[test]
    fn every_store_runs_the_workload() {
        for store in STORES {
            let dir = tempfile_dir(store);
            let f = crate::with_store!(store, S => run::<S>(&dir, false, 2_000));
            for key in ["bulk_load", "single", "batch", "len", "read_1t", "read_2t", "remove"] {
                assert!(f[key] > 0.0, "{store}: {key} = {}", f[key]);
            }
            if store != "HashMap" {
                let raw = ((2_000 + SINGLES + BATCHES * BATCH) * (KEY_LEN + VALUE_LEN)) as f64;
                assert!(f["size_writes"] >= raw, "{store}: {} < {raw}", f["size_writes"]);
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    fn tempfile_dir(store: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pheap-compare-test-{}-{store}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
