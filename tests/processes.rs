//! Real crashes: a child process commits in a loop and reports each acknowledged commit; the
//! parent kills it with SIGKILL at a random moment (sometimes while it is still opening or
//! recovering), reopens the heap and checks that every acknowledged commit is there. The machine
//! keeps running, so non-durable commits must survive too.
//!
//! `PHEAP_KILL_ROUNDS=5000 cargo test --release --test processes` for a longer run (500 by default).

use pheap::prelude::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use pheap::{Durability, Heap};

const CHILD_ENV: &str = "PHEAP_KILL_CHILD";

/// This test binary running only the test `name`, with `env` set to `path`; its stdout piped.
fn spawn_child(name: &str, env: &str, path: &Path) -> (Child, ChildStdout) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(env, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    (child, stdout)
}

fn xorshift(x: &mut u64) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
}

fn value(i: u64) -> Vec<u8> {
    let len = if i.is_multiple_of(97) { 70_000 } else { 20 + (i % 200) as usize };
    (0..len).map(|j| (i as usize + j) as u8).collect()
}

/// The child: resume after the largest key present, then commit forever; key `i` is inserted
/// by commit `i`, and key `i - 50` removed, so the heap holds a sliding window.
#[test]
fn child_process() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    let heap = Heap::open(&path).unwrap();
    let mut next = {
        let rx = heap.begin_read().unwrap();
        let mut max = 0;
        for item in rx.iter() {
            let (k, _) = item.unwrap();
            max = max.max(u64::from_be_bytes(k.try_into().unwrap()));
        }
        max + 1
    };
    loop {
        let mut tx = heap.begin_write().unwrap();
        tx.insert(next.to_be_bytes(), value(next)).unwrap();
        if next > 50 {
            tx.remove((next - 50).to_be_bytes()).unwrap();
        }
        tx.set_durability(if next % 3 == 0 { Durability::None } else { Durability::Immediate });
        tx.commit().unwrap();
        println!("ack {next}");
        next += 1;
    }
}

#[test]
fn killed_processes_lose_no_acknowledged_commit() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let rounds: u64 =
        std::env::var("PHEAP_KILL_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(500);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pheap");
    let mut acked = 0u64;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let start = Instant::now();
    for round in 0..rounds {
        xorshift(&mut rng);
        let (mut child, stdout) = spawn_child("child_process", CHILD_ENV, &path);
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The first line shares libtest's "test child_process ... " prefix.
                if let Some(at) = line.find("ack ") {
                    last = Some(line[at + 4..].trim().parse::<u64>().unwrap());
                }
            }
            last
        });
        // Early kills land during open and recovery, later ones mid-commit.
        std::thread::sleep(Duration::from_micros(rng % 60_000));
        child.kill().unwrap();
        child.wait().unwrap();
        if let Some(last) = reader.join().unwrap() {
            assert!(last >= acked, "acknowledgements go forward");
            acked = last;
        }
        // The heap must be exactly the state after some commit `top` (its largest key) no older
        // than the last acknowledged one. Commits that landed unacknowledged (one per kill at
        // most) count: the next child continued from them.
        let heap = Heap::open(&path).unwrap();
        let rx = heap.begin_read().unwrap();
        let mut keys = Vec::new();
        for item in rx.iter() {
            let (k, v) = item.unwrap();
            let k = u64::from_be_bytes(k.try_into().unwrap());
            assert_eq!(v.bytes().unwrap(), &value(k)[..], "round {round}: value of key {k}");
            keys.push(k);
        }
        keys.sort_unstable();
        let top = keys.last().copied().unwrap_or(0);
        assert!(top >= acked, "round {round}: acknowledged commit {acked} lost (heap at {top})");
        let expected: Vec<u64> = (top.saturating_sub(49).max(1)..=top).collect();
        assert_eq!(keys, expected, "round {round}: not the state of commit {top}");
        assert!(top <= acked + round + 1, "round {round}: more commits than children could make");
        drop(rx);
        heap.check().unwrap();
    }
    assert!(acked > 0, "the child never committed");
    eprintln!(
        "{rounds} kills, {acked} commits acknowledged, {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

const LOCK_ENV: &str = "PHEAP_LOCK_CHILD";

/// Child of `one_writer_across_processes`: report whether it may write now, and what it reads.
#[test]
fn lock_child() {
    let Ok(path) = std::env::var(LOCK_ENV) else { return };
    let heap = Heap::open(&path).unwrap();
    match heap.try_begin_write() {
        Err(pheap::Error::WriteInProgress) => println!("result busy"),
        Err(e) => println!("result error {e}"),
        Ok(mut tx) => {
            tx.insert(b"child", b"was here").unwrap();
            tx.commit().unwrap();
            println!("result wrote");
        }
    }
    std::fs::write(format!("{path}.waiting"), b"").unwrap();
    let t = Instant::now();
    let mut tx = heap.begin_write().unwrap();
    let waited = t.elapsed() >= Duration::from_millis(200);
    tx.insert(b"waited", b"").unwrap();
    tx.commit().unwrap();
    println!("result waited {waited}");
    let n = heap.begin_read().unwrap().len().unwrap();
    println!("result entries {n}");
    let ro = Heap::options().read_only(true).open(&path).unwrap();
    println!("result ro entries {}", ro.begin_read().unwrap().len().unwrap());
}

#[test]
fn one_writer_across_processes() {
    if std::env::var(CHILD_ENV).is_ok() || std::env::var(LOCK_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.pheap");
    let run_child = || {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["lock_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(LOCK_ENV, &path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.match_indices("result ")
            .map(|(at, _)| text[at + 7..].lines().next().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let heap = Heap::open(&path).unwrap();
    let mut tx = heap.begin_write().unwrap();
    tx.insert(b"parent", b"1").unwrap();
    // The child's blocking begin_write waits until this transaction ends, 300 ms after the
    // child says it is about to wait.
    let marker = path.with_extension("pheap.waiting");
    let ender = std::thread::spawn(move || {
        while !marker.exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::fs::remove_file(&marker).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        tx.commit().unwrap();
    });
    assert_eq!(
        run_child(),
        ["busy", "waited true", "entries 2", "ro entries 2"],
        "a write transaction excludes other processes' writers; a waiting one goes on after it"
    );
    ender.join().unwrap();
    assert_eq!(
        run_child(),
        ["wrote", "waited false", "entries 3", "ro entries 3"],
        "the lock goes with the txn"
    );
    let rx = heap.begin_read().unwrap();
    assert_eq!(rx.get(b"child").unwrap(), Some(&b"was here"[..]), "the child's commit is seen");
    heap.check().unwrap();
}

const GROUP_ENV: &str = "PHEAP_KILL_GROUP_CHILD";
const GROUP_THREADS: u64 = 4;

/// Child of `killed_group_committers_lose_no_acknowledged_commit`: four threads of one handle
/// commit durably at once (their commits share syncs, DESIGN §4.3); thread `t`'s commit `i`
/// inserts key `(t, i)`, resuming after its largest key present, and reports `ack t i`.
#[test]
fn group_child_process() {
    let Ok(path) = std::env::var(GROUP_ENV) else { return };
    let heap = Heap::open(&path).unwrap();
    let mut next = [1u64; GROUP_THREADS as usize];
    for item in heap.begin_read().unwrap().iter() {
        let (k, _) = item.unwrap();
        let (t, i) = (u64::from(k[0]), u64::from_be_bytes(k[1..9].try_into().unwrap()));
        next[t as usize] = next[t as usize].max(i + 1);
    }
    let out = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        for t in 0..GROUP_THREADS {
            let (heap, out, mut i) = (heap.clone(), &out, next[t as usize]);
            s.spawn(move || {
                loop {
                    let mut key = vec![t as u8];
                    key.extend_from_slice(&i.to_be_bytes());
                    let mut tx = heap.begin_write().unwrap();
                    tx.insert(&key, value(i)).unwrap();
                    tx.commit().unwrap();
                    use std::io::Write;
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ack {t} {i}").unwrap();
                    o.flush().unwrap();
                    i += 1;
                }
            });
        }
    });
}

/// Processes killed while their threads' durable commits share syncs (a sync in flight, commits
/// staged behind it): every acknowledged commit of every thread is there afterwards, and each
/// thread's keys are exactly 1..=n for some n (no commit half there, none lost in the middle).
#[test]
fn killed_group_committers_lose_no_acknowledged_commit() {
    if std::env::var(CHILD_ENV).is_ok() || std::env::var(GROUP_ENV).is_ok() {
        return;
    }
    let rounds: u64 =
        std::env::var("PHEAP_KILL_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(500) / 5;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.pheap");
    let mut acked = [0u64; GROUP_THREADS as usize];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..rounds {
        xorshift(&mut rng);
        let (mut child, stdout) = spawn_child("group_child_process", GROUP_ENV, &path);
        let reader = std::thread::spawn(move || {
            let mut last = [0u64; GROUP_THREADS as usize];
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("ack ") {
                    let mut f = line[at + 4..].split_whitespace().map(|x| x.parse::<u64>());
                    let (t, i) = (f.next().unwrap().unwrap(), f.next().unwrap().unwrap());
                    last[t as usize] = last[t as usize].max(i);
                }
            }
            last
        });
        std::thread::sleep(Duration::from_micros(20_000 + rng % 80_000));
        child.kill().unwrap();
        child.wait().unwrap();
        for (a, l) in acked.iter_mut().zip(reader.join().unwrap()) {
            *a = (*a).max(l);
        }
        let heap = Heap::open(&path).unwrap();
        let mut keys: Vec<Vec<u64>> = vec![Vec::new(); GROUP_THREADS as usize];
        for item in heap.begin_read().unwrap().iter() {
            let (k, v) = item.unwrap();
            let (t, i) = (k[0] as usize, u64::from_be_bytes(k[1..9].try_into().unwrap()));
            assert_eq!(v.bytes().unwrap(), &value(i)[..], "round {round}: value of {t}/{i}");
            keys[t].push(i);
        }
        for (t, ks) in keys.iter_mut().enumerate() {
            ks.sort_unstable();
            let n = ks.len() as u64;
            assert_eq!(*ks, (1..=n).collect::<Vec<_>>(), "round {round}: thread {t}'s keys");
            assert!(n >= acked[t], "round {round}: thread {t}'s commit {} lost", acked[t]);
        }
        heap.check().unwrap();
    }
    assert!(acked.iter().all(|&a| a > 0), "a thread never committed: {acked:?}");
    eprintln!("{rounds} kills of group committers, acknowledged {acked:?}");
}
