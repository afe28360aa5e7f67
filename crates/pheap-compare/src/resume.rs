//! Resume: a fresh process opens an existing store and gets one key. The parent times spawn to
//! the child's report of its first get; the child times its open and its get. Cold runs evict
//! the store's files from the page cache first (`posix_fadvise(DONTNEED)` after a sync).

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::data::{Data, key_at};
use crate::stores::{Store, open_and_get};

/// One resume measurement, in seconds.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    pub total: f64,
    pub open: f64,
    pub get: f64,
}

/// The build child: fills a fresh store with `n` entries in transactions of 100,000 keys (sled
/// holds a batch's whole working set in memory: a batch of a million 16-byte pairs grew it past
/// 24 GiB), then makes it durable.
pub fn build<S: Store>(dir: &Path, n: usize, key_len: usize, value_len: usize) {
    let data = Data::new(n, key_len, value_len);
    let mut store = S::open(dir, false);
    for start in (0..n).step_by(100_000) {
        store.insert(&data, start..n.min(start + 100_000));
        if start % 1_000_000 == 0 {
            store.sync();
        }
    }
    assert_eq!(store.len(), n as u64);
    store.sync();
}

/// The cold-reads child: open the store built by [`build`], read every key in random order (the
/// workload's order) and check each value; returns the seconds from before the open.
pub fn cold_reads<S: Store>(dir: &Path, n: usize, key_len: usize, value_len: usize) -> f64 {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let data = Data::new(n, key_len, value_len);
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut rand::rngs::SmallRng::seed_from_u64(3));
    let t = Instant::now();
    let store = S::open(dir, false);
    assert_eq!(store.read(&data, &order), n as u64);
    t.elapsed().as_secs_f64()
}

/// The resume child: open, get key `index`, check it, report on one line.
pub fn child(store: &str, dir: &Path, index: usize, key_len: usize, value_len: usize) {
    let mut key = vec![0u8; key_len];
    key_at(index, &mut key);
    open_and_get(store, dir, &key, value_len, |opened, got, ok| {
        assert_eq!(ok, Some(true), "{store}: key {index} in resume");
        println!("{} {}", opened.as_nanos(), (got - opened).as_nanos());
    });
}

/// Spawns this program with `args`, returns spawn-to-first-line and the child's own figures.
pub fn spawn(args: &[String]) -> Sample {
    let exe = std::env::current_exe().unwrap();
    let t = Instant::now();
    let mut child = Command::new(exe).args(args).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let total = t.elapsed();
    assert!(child.wait().unwrap().success(), "resume child {args:?} failed");
    let mut parts = line.split_whitespace().map(|p| p.parse::<u64>().unwrap());
    let ns = |p: Option<u64>| Duration::from_nanos(p.unwrap_or(0)).as_secs_f64();
    Sample { total: total.as_secs_f64(), open: ns(parts.next()), get: ns(parts.next()) }
}

/// Writes back and drops from the page cache every file under `dir`.
pub fn evict(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            evict(&path);
            continue;
        }
        let file = std::fs::File::open(&path).unwrap();
        file.sync_all().unwrap();
        // SAFETY: a plain syscall on a descriptor this function owns; no memory is passed.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise {}", path.display());
    }
}
