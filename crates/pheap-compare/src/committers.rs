//! Concurrent durable commits (group commit): 1, 2, 4 and 8 committers, threads of one process
//! or processes of their own, each making durable single-key transactions for a fixed time.
//! Reported: commits per second of all of them together, for every store that allows the setup
//! (redb and sled open a store in one process only).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::stores::Store;
use crate::workload::{KEY_LEN, VALUE_LEN};

/// Committer counts measured.
pub const COUNTS: [usize; 4] = [1, 2, 4, 8];

/// Stores whose files several processes may open at once.
pub fn multi_process(store: &str) -> bool {
    matches!(store, "pheap" | "LMDB")
}

/// Key `seq` of committer `who`: 24 bytes, distinct across committers and runs of one store.
fn key(who: usize, seq: u64) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    let s = format!("c{who:03}-{seq:019}");
    k[..s.len().min(KEY_LEN)].copy_from_slice(&s.as_bytes()[..s.len().min(KEY_LEN)]);
    k
}

/// Durable single-key commits by committer `who` until `deadline`; returns how many.
fn commit_until<S: Store>(store: &S, who: usize, deadline: Instant) -> u64 {
    let value = [who as u8; VALUE_LEN];
    let mut seq = 0;
    while Instant::now() < deadline {
        store.commit_one(&key(who, seq), &value);
        seq += 1;
    }
    seq
}

/// `n` threads of this process share one open store, each committing for `secs`: commits per
/// second of all of them.
pub fn threads<S: Store>(dir: &Path, n: usize, secs: f64) -> f64 {
    let store = S::open(dir, true);
    let barrier = Barrier::new(n + 1);
    let total: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|who| {
                let (store, barrier) = (&store, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    commit_until(store, who, Instant::now() + Duration::from_secs_f64(secs))
                })
            })
            .collect();
        barrier.wait();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total as f64 / secs
}

/// Child of [`processes`]: open, say so, wait for the word, commit for `secs`, print the count.
pub fn process_child<S: Store>(dir: &Path, who: usize, secs: f64) {
    let store = S::open(dir, true);
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let n = commit_until(&store, who, Instant::now() + Duration::from_secs_f64(secs));
    println!("{n}");
}

/// `n` processes, each with the store open, committing for `secs` at once (children of this
/// program, `__commit`): commits per second of all of them.
pub fn processes(store: &str, dir: &Path, n: usize, secs: f64) -> f64 {
    // The store exists before the children race to create it.
    crate::with_store!(store, S => drop(S::open(dir, true)));
    let mut children: Vec<_> = (0..n)
        .map(|who| {
            Command::new(std::env::current_exe().unwrap())
                .args(["__commit", store, &who.to_string(), &secs.to_string()])
                .arg(dir)
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
        assert_eq!(out.next().as_deref(), Some("ready"), "{store} committer did not start");
    }
    for c in &mut children {
        writeln!(c.stdin.as_mut().unwrap(), "go").unwrap();
    }
    let total: u64 = outs.iter_mut().map(|o| o.next().unwrap().parse::<u64>().unwrap()).sum();
    for c in &mut children {
        assert!(c.wait().unwrap().success());
    }
    total as f64 / secs
}
