//! The fuzz targets' bodies (fuzz/fuzz_targets/ call these), so that the crate's tests can run
//! them too: every committed input replays clean, and twice the same (libFuzzer assumes a
//! target is a function of its input). Each returns a digest of what it observed: every result
//! and error, every value read. Nothing in them is random: a heap created here takes its key-hash
//! seed from the input, and paths never reach the digest.

use crate::{Readable, Writable};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use super::{Harness, Model, Op, Val, snapshot};
use crate::{Durability, Heap, Kind};

/// Operation sequences on the simulated disk against the model (`Op::decode`).
pub fn ops_crash(data: &[u8]) -> u64 {
    Harness::on_sim_disk().run(Op::decode(data))
}

/// As [`ops_crash`], with nested maps, parts and tags (`Op::decode_maps`).
pub fn maps_crash(data: &[u8]) -> u64 {
    Harness::on_sim_disk().run(Op::decode_maps(data))
}

/// Arbitrary bytes as a heap file: open, read everything, run the integrity walk, write. Any
/// outcome but a panic, a hang or an unbounded allocation is fine.
pub fn open_walk(data: &[u8]) -> u64 {
    let dir = Scratch::new();
    let path = dir.0.join("f.pheap");
    std::fs::write(&path, data).expect("write input");
    let mut log = Log::new(&dir.0);
    let opened = Heap::options().create(false).open(&path);
    let Some(heap) = log.status("open", &opened) else { return log.digest() };
    if let Some(rx) = log.status("begin_read", &heap.begin_read()) {
        for item in rx.iter() {
            let Some((k, _)) = log.status("iter", &item) else { break };
            log.result("get", &rx.get(k));
        }
        log.result("get absent", &rx.get(b"absent"));
    }
    log.result("check", &heap.check().map(drop));
    if let Ok(mut tx) = heap.begin_write() {
        let res = tx.insert(b"key", b"value").and_then(|_| tx.remove(b"other"));
        log.result("write", &res);
        log.result("commit", &tx.commit());
    }
    log.digest()
}

/// Build a heap from the input's first part (operations), corrupt it with the input's second
/// part (offset/xor edits), reopen, and read, walk and write. Any outcome but a panic, a hang or
/// an unbounded allocation is fine; a heap that was not corrupted must hold exactly the model.
pub fn corrupt_ops(data: &[u8]) -> u64 {
    corrupt_ops_seeded(data, xxh3_128(data).to_le_bytes())
}

/// [`corrupt_ops`] with the heap's key-hash seed given.
fn corrupt_ops_seeded(data: &[u8], seed: [u8; 16]) -> u64 {
    let (ops, edits) =
        data.split_at(data.len().min(data.first().copied().unwrap_or(0) as usize * 4));
    let dir = Scratch::new();
    let path = dir.0.join("c.pheap");
    let mut model = Model::new();
    {
        let heap = Heap::options()
            .durability(Durability::None)
            .hash_seed(seed)
            .open(&path)
            .expect("create");
        let mut tx = heap.begin_write().expect("writer");
        for op in ops.chunks(4) {
            let k = vec![op[0] % 64];
            match op.get(1).copied().unwrap_or(0) % 8 {
                0 => {
                    tx.remove(&k).expect("remove");
                    model.remove(&k);
                }
                7 => {
                    tx.commit().expect("commit");
                    tx = heap.begin_write().expect("writer");
                }
                6 => {
                    // A value of two parts, tagged, in a sub-map (keys 200.. are maps only).
                    let m = vec![200 + op[0] % 4];
                    let fill = op.get(3).copied().unwrap_or(0);
                    let len = op.get(2).copied().unwrap_or(0) as usize * 60;
                    let (inline, part) = (vec![fill; 40], vec![fill ^ 1; len]);
                    let kind = Kind::Tagged(fill);
                    tx.map_mut(&m)
                        .and_then(|mut sub| sub.insert_parts(&k, kind, &inline, &[&part]))
                        .expect("insert in a sub-map");
                    let Val::Map(sub) = model.entry(m).or_insert_with(|| Val::Map(Model::new()))
                    else {
                        unreachable!("keys 200.. hold maps")
                    };
                    sub.insert(k, Val::of(kind, &inline, &[part]));
                }
                n => {
                    let len = op.get(2).copied().unwrap_or(0) as usize * n as usize * 40;
                    let v = vec![op.get(3).copied().unwrap_or(0); len];
                    tx.insert(&k, &v).expect("insert");
                    model.insert(k, Val::plain(&v));
                }
            }
        }
        tx.commit().expect("commit");
        heap.checkpoint().expect("checkpoint");
    }
    let mut bytes = std::fs::read(&path).expect("read");
    let pristine = edits.len() < 5;
    for e in edits.chunks(5) {
        if e.len() < 5 || bytes.is_empty() {
            break;
        }
        let at = u32::from_le_bytes([e[0], e[1], e[2], e[3]]) as usize % bytes.len();
        bytes[at] ^= e[4] | 1;
    }
    std::fs::write(&path, &bytes).expect("write");
    let mut log = Log::new(&dir.0);
    let opened = Heap::options().create(false).open(&path);
    let Some(heap) = log.status("open", &opened) else {
        assert!(!pristine, "an intact heap failed to open");
        return log.digest();
    };
    if let Some(rx) = log.status("begin_read", &heap.begin_read()) {
        let got = snapshot(rx);
        log.result("walk", &got);
        if pristine {
            assert_eq!(got.expect("an intact heap reads"), model, "contents differ from the model");
        }
        for k in 0..64u8 {
            log.result("get", &rx.get([k]));
        }
        for m in 200..204u8 {
            if let Some(Some(sub)) = log.status("map", &rx.map([m])) {
                for k in 0..64u8 {
                    if let Some(Some(v)) = log.status("get_value", &sub.get_value([k])) {
                        log.result("parts", &v.parts().collect::<crate::Result<Vec<_>>>());
                    }
                }
            }
        }
    }
    let sound = log.result("check", &heap.check().map(drop)).is_some();
    assert!(sound || !pristine, "an intact heap failed its integrity walk");
    if let Ok(mut tx) = heap.begin_write() {
        let res = tx.insert(b"after", [7; 300]).and_then(|_| tx.remove([1]).map(|_| ()));
        log.result("write", &res);
        // Removing a (possibly damaged) sub-map frees its whole tree: an error, never a
        // double free or a hang.
        let res = tx.remove([200]).and_then(|_| tx.remove([201]));
        log.result("remove maps", &res);
        log.result("commit", &tx.commit());
    }
    log.result("check after", &heap.check().map(drop));
    log.digest()
}

/// A scratch directory (in /dev/shm where there is one), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("pheap-target-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a target observed, folded into a digest: each step's name and result (values as
/// `Debug` shows them, errors as `Display` does, the scratch directory's path taken out).
struct Log {
    dir: String,
    hasher: Xxh3,
}

impl Log {
    fn new(dir: &Path) -> Log {
        Log { dir: dir.display().to_string(), hasher: Xxh3::new() }
    }

    fn add(&mut self, shown: String) {
        self.hasher.update(shown.replace(&self.dir, "DIR").as_bytes());
    }

    /// A step that returns a value: logged with it.
    fn result<'r, T: std::fmt::Debug>(
        &mut self,
        step: &str,
        r: &'r crate::Result<T>,
    ) -> Option<&'r T> {
        self.add(match r {
            Ok(v) => format!("{step} ok {v:?}\n"),
            Err(e) => format!("{step} err {e}\n"),
        });
        r.as_ref().ok()
    }

    /// A step that returns a handle or a transaction: logged as succeeded, or with its error.
    fn status<'r, T>(&mut self, step: &str, r: &'r crate::Result<T>) -> Option<&'r T> {
        self.add(match r {
            Ok(_) => format!("{step} ok\n"),
            Err(e) => format!("{step} err {e}\n"),
        });
        r.as_ref().ok()
    }

    fn digest(&self) -> u64 {
        self.hasher.digest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed fuzz input (fuzz/corpus/) replays clean through its target, and gives
    /// the same digest twice in a row: a failure found by the fuzzer replays on its first run.
    #[test]
    fn every_fuzz_input_replays_clean_and_the_same_twice() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        type Target = fn(&[u8]) -> u64;
        let targets: [(&str, Target); 4] = [
            ("ops_crash", ops_crash),
            ("maps_crash", maps_crash),
            ("open_walk", open_walk),
            ("corrupt_ops", corrupt_ops),
        ];
        let mut inputs = 0;
        for (name, target) in targets {
            let mut files: Vec<_> = std::fs::read_dir(corpus.join(name))
                .expect("the target's corpus")
                .map(|e| e.expect("a corpus entry").path())
                .collect();
            files.sort();
            assert!(!files.is_empty(), "{name}: no committed input");
            for file in files {
                let data = std::fs::read(&file).expect("a corpus input");
                let (first, second) = (target(&data), target(&data));
                assert_eq!(first, second, "{name}: {} gave two results", file.display());
                inputs += 1;
            }
        }
        eprintln!("{inputs} inputs replayed twice");
    }

    /// Regression (the shared finding `corrupt_ops-walk-and-lookup-disagree`, a CI flake): with
    /// the hash seeds it failed under, the byte flips change a node's bitmap so that the walk
    /// yields a sub-map that `map(key)` does not find, and the kit's walk panicked. Now the walk
    /// checks every leaf's hash path: it fails with `Corrupt` instead (DESIGN §2.6.3).
    #[test]
    fn the_walk_and_lookups_agree_on_the_finding_whatever_the_seed() {
        let data = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/corpus/corrupt_ops/regress-walk-and-lookup-disagree"),
        )
        .unwrap();
        // Seeds under which it failed (27 of the first 3,000), and a few others.
        for seed in [145u128, 176, 186, 298, 327, 1031, 1151, 1173, 1190, 0, 1, 2] {
            corrupt_ops_seeded(&data, seed.to_le_bytes());
        }
    }

    /// The digests see what the targets read: two inputs that build different heaps differ.
    #[test]
    fn digests_tell_outcomes_apart() {
        let ops = |fill: u8| [2u8, 1, 3, fill, 2, 1, 3, fill];
        assert_ne!(corrupt_ops(&ops(1)), corrupt_ops(&ops(2)));
        let mut heap = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/open_walk/valid-40"),
        )
        .unwrap();
        let intact = open_walk(&heap);
        heap.truncate(heap.len() / 2);
        assert_ne!(open_walk(&heap), intact);
        assert_ne!(ops_crash(&[1, 1, 5, 6, 0, 0]), ops_crash(&[1, 2, 5, 6, 0, 0]));
    }
}
