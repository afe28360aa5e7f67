//! Random operation sequences on the simulated disk against a model, with process crashes,
//! power losses of four kinds (durable only, a random subset of unsynced writes, a torn last
//! write, lost growth) and injected I/O failures. A crash strikes the live process: its handle
//! and any open write transaction are dropped only after the crash image is taken, so nothing
//! they would do on close reaches it. After every crash the heap must open, pass the integrity
//! walk and hold the state of an acknowledged commit no older than the last durable one, or of
//! a commit whose call failed and that no later write transaction has settled (DESIGN §4.6).
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
    let mut boot = 0u32;
    let mut heap = disk.open(boot).expect("open");
    // Acknowledged states (state, durable), and the one in flight.
    let mut acked: Vec<(Model, bool)> = vec![(Model::new(), true)];
    let mut in_flight: Option<Model> = None;
    // A commit whose call failed and that a process crash then forgot: until a write
    // transaction settles the file (S2), a power loss may still bring it back.
    let mut in_doubt: Option<Model> = None;
    let mut tx = None;
    let mut poisoned = false;
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
                    in_doubt = None;
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
                    Ok(()) => {
                        in_doubt = None;
                        acked.push((m, true))
                    }
                    Err(_) => poisoned = true,
                }
            }
            11 if !poisoned && tx.is_none() && b % 8 == 0 => {
                let m = acked.last().expect("one").0.clone();
                in_flight = Some(m.clone());
                match heap.compact() {
                    Ok(_) => {
                        in_doubt = None;
                        let s = heap.stats().expect("stats");
                        acked.push((m, s.durable_txn_id == s.txn_id));
                    }
                    Err(_) => poisoned = true,
                }
            }
            12 => {
                failed = true;
                disk.fail(b as u64 % 16, c, c % 2 == 0)
            }
            13..=15 => {
                // A crash: of the process (13), or of the machine (14, 15: a power loss), while
                // the handle (and any write transaction) is live.
                let power = a % 16 != 13;
                let after = if power { disk.power_loss(b, c as u64) } else { disk.process_crash() };
                drop(tx.take());
                drop(heap);
                disk = after;
                if power {
                    boot += 1;
                }
                heap = disk.open(boot).expect("a crashed heap opens");
                heap.check().expect("integrity walk after a crash");
                let got = contents(&heap);
                let last_durable = acked.iter().rposition(|s| s.1).expect("durable");
                let from = if power || failed {
                    // After a failure the heap may forget what was not known synced (S1).
                    last_durable
                } else {
                    acked.len() - 1
                };
                let doubtful = [&in_flight, &in_doubt];
                assert!(
                    acked[from..].iter().any(|s| s.0 == got)
                        || doubtful.iter().any(|d| d.as_ref() == Some(&got)),
                    "recovered a state never acknowledged, or lost one"
                );
                if !power && failed && in_flight.as_ref() != Some(&got) {
                    in_doubt = in_flight.take().or(in_doubt.take());
                } else if power {
                    in_doubt = None;
                }
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
