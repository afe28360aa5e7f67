//! Random operation sequences on the simulated disk against a model, with process crashes,
//! power losses of four kinds (durable only, a random subset of unsynced writes, a torn last
//! write, lost growth) and injected I/O failures. After every crash the heap must open, pass the
//! integrity walk and hold the state of an acknowledged commit no older than the last durable
//! one (or the commit in flight).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use pheap::fuzzing::SimDisk;
use pheap::{Durability, Heap};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn contents(heap: &Heap) -> Model {
    let rx = heap.begin_read().expect("read");
    rx.iter()
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<_, _>>()
        .expect("walk")
}

fuzz_target!(|data: &[u8]| {
    let mut disk = SimDisk::new();
    let mut boot = 0u8;
    let mut heap = disk.open(boot).expect("open");
    // Acknowledged states (state, durable), and the one in flight.
    let mut acked: Vec<(Model, bool)> = vec![(Model::new(), true)];
    let mut in_flight: Option<Model> = None;
    let mut tx = None;
    let mut poisoned = false;
    // An fsync that failed losing its pages (Linux marks them clean): a later process trusts what
    // it finds in the page cache and its syncs have nothing to write, so what was acknowledged as
    // durable after that may not be (DESIGN.md §7). Power losses then only check consistency.
    let mut sync_lost = false;
    // A failure happened since the last crash: a process crash may then reopen at the last
    // durable commit.
    let mut failed = false;
    for op in data.chunks(3) {
        let (a, b) = (op[0], op.get(1).copied().unwrap_or(0));
        let c = op.get(2).copied().unwrap_or(0);
        match a % 16 {
            0..=5 if !poisoned => {
                if tx.is_none() {
                    let Ok(t) = heap.begin_write() else {
                        poisoned = true;
                        continue;
                    };
                    tx = Some((t, acked.last().expect("one").0.clone()));
                }
                let (t, m) = tx.as_mut().expect("open");
                let k = vec![b % 32];
                let res = if a % 16 == 0 {
                    m.remove(&k);
                    t.remove(&k).map(|_| ())
                } else {
                    let v = vec![c; if c == 255 { 70_000 } else { c as usize * 3 }];
                    m.insert(k.clone(), v.clone());
                    t.insert(&k, &v)
                };
                if res.is_err() {
                    tx = None;
                    poisoned = true;
                }
            }
            6..=8 if !poisoned => {
                let Some((mut t, m)) = tx.take() else { continue };
                let durable = b % 2 == 0;
                t.set_durability(if durable { Durability::Immediate } else { Durability::None });
                in_flight = Some(m.clone());
                match t.commit() {
                    Ok(()) => acked.push((m, durable)),
                    Err(_) => poisoned = true,
                }
            }
            9 => drop(tx.take()),
            10 if !poisoned && tx.is_none() => {
                let m = acked.last().expect("one").0.clone();
                in_flight = Some(m.clone());
                match heap.checkpoint() {
                    Ok(()) => acked.push((m, true)),
                    Err(_) => poisoned = true,
                }
            }
            11 if !poisoned && tx.is_none() && b % 8 == 0 => {
                let m = acked.last().expect("one").0.clone();
                in_flight = Some(m.clone());
                match heap.compact() {
                    Ok(_) => {
                        let s = heap.stats().expect("stats");
                        acked.push((m, s.durable_txn_id == s.txn_id));
                    }
                    Err(_) => poisoned = true,
                }
            }
            12 => {
                sync_lost |= c % 4 == 3;
                failed = true;
                disk.fail(b as u64 % 16, c, c % 2 == 0)
            }
            13..=15 => {
                // A crash: of the process (13), or of the machine (14, 15: a power loss).
                drop(tx.take());
                drop(heap);
                disk.heal();
                let power = a % 16 != 13;
                disk = if power { disk.power_loss(b, c as u64) } else { disk.process_crash() };
                if power {
                    boot = boot.wrapping_add(1);
                }
                heap = disk.open(boot).expect("a crashed heap opens");
                heap.check().expect("integrity walk after a crash");
                let got = contents(&heap);
                let last_durable = acked.iter().rposition(|s| s.1).expect("durable");
                let from = match (power, sync_lost) {
                    (true, true) => 0,
                    (true, false) => last_durable,
                    // After a failure the heap may forget what was not known synced (I13).
                    (false, _) if failed => last_durable,
                    (false, _) => acked.len() - 1,
                };
                assert!(
                    acked[from..].iter().any(|s| s.0 == got) || in_flight.as_ref() == Some(&got),
                    "recovered a state never acknowledged, or lost one"
                );
                // The history continues from the recovered state: an acknowledged one keeps its
                // durability; the one in flight counts as not durable (its sync may not have
                // finished) unless a power loss just proved it durable.
                match acked[from..].iter().rposition(|s| s.0 == got) {
                    Some(i) => acked.truncate(from + i + 1),
                    None => acked.push((got, false)),
                }
                if power {
                    acked.last_mut().expect("one").1 = true;
                }
                in_flight = None;
                poisoned = false;
                failed = false;
                if power {
                    // What survived is durable now only once synced; the model keeps it as the
                    // floor until the next durable commit says otherwise.
                    let _ = heap.checkpoint();
                }
            }
            _ => {}
        }
    }
});
