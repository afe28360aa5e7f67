//! The harness: runs [`Op`]s against a heap and checks every result against the [`History`].

use super::{History, Model, Op, SimDisk, Val, contents, model_map, snapshot, txn_contents};
use crate::{Durability, Error, Heap, Kind, ReadTxn, WriteTxn};
use crate::{Readable, Writable};

/// Where the heap lives.
#[derive(Debug)]
enum Backend {
    /// The simulated disk, opened as a process of boot `boot`.
    Sim { disk: SimDisk, boot: u32 },
    /// A real file (crashes and failures are skipped: they need the simulated disk).
    #[cfg(test)]
    File { _dir: tempfile::TempDir, path: std::path::PathBuf },
}

/// A heap under test and its model. [`Harness::apply`] panics when the heap departs from the
/// model: a result that differs, an error no injected failure explains, a crash that recovers
/// a state never acknowledged or loses one it must keep, a held snapshot that changes.
#[derive(Debug)]
pub struct Harness {
    backend: Backend,
    /// `None` only between a close and the open after it.
    heap: Option<Heap>,
    history: History,
    tx: Option<(WriteTxn, Model)>,
    /// Held read transactions and what they must keep seeing.
    readers: Vec<(ReadTxn, Model)>,
    /// A call failed: the handle refuses work until the next crash or reopen.
    poisoned: bool,
    /// A failure was injected since the last crash: a crash may then reopen at the last durable
    /// commit (S1), and errors are expected.
    failed: bool,
}

impl Harness {
    /// A new heap on the simulated disk.
    pub fn on_sim_disk() -> Harness {
        let disk = SimDisk::new();
        let heap = disk.open(0).expect("a new heap opens");
        Harness::with(Backend::Sim { disk, boot: 0 }, heap)
    }

    /// A new heap in a file of a temporary directory.
    #[cfg(test)]
    pub(crate) fn on_file() -> Harness {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("model.pheap");
        let heap = Heap::open(&path).expect("a new heap opens");
        Harness::with(Backend::File { _dir: dir, path }, heap)
    }

    fn with(backend: Backend, heap: Heap) -> Harness {
        Harness {
            backend,
            heap: Some(heap),
            history: History::new(Model::new()),
            tx: None,
            readers: Vec::new(),
            poisoned: false,
            failed: false,
        }
    }

    /// The heap under test.
    pub fn heap(&self) -> &Heap {
        self.heap.as_ref().expect("open")
    }

    /// An operation failed with `e`: expected only after an injected failure. The harness stops
    /// working the handle until the next crash or reopen, unless the handle says it is still
    /// usable after a full disk (a failed growth poisons nothing: DESIGN §4.6).
    fn failure(&mut self, what: &str, e: Error) {
        assert!(self.failed, "{what} failed with no failure injected: {e}");
        let full = matches!(&e, Error::Io(io) if io.raw_os_error() == Some(libc::ENOSPC));
        self.poisoned = !full || self.heap().begin_read().is_err();
    }

    /// The open write transaction, begun if none is; `None` if beginning failed.
    fn tx(&mut self) -> Option<&mut (WriteTxn, Model)> {
        if self.tx.is_none() {
            match self.heap().begin_write() {
                Ok(t) => {
                    self.history.settled();
                    let m = self.history.latest().clone();
                    assert_eq!(
                        txn_contents(&t),
                        m,
                        "a new write transaction sees the latest commit"
                    );
                    self.tx = Some((t, m));
                }
                Err(e) => {
                    self.failure("begin_write", e);
                    return None;
                }
            }
        }
        self.tx.as_mut()
    }

    /// The end of a map operation that did not simply succeed: a [`Error::WrongKind`] exactly
    /// when the model expects one (`wrong_kind`), leaving the transaction usable; any other
    /// error is a failure.
    fn settle_map_op(&mut self, what: &str, res: crate::Result<()>, wrong_kind: bool) {
        match res {
            Err(Error::WrongKind { .. }) if wrong_kind => {}
            Ok(()) if !wrong_kind => {}
            Err(e @ Error::WrongKind { .. }) => panic!("{what}: unexpected {e}"),
            Ok(()) => panic!("{what} succeeded where the model holds bytes on the path"),
            Err(e) => {
                self.tx = None;
                self.failure(what, e);
            }
        }
    }

    /// The open transaction sees what its model holds.
    fn txn_matches(&self) {
        if let Some((t, m)) = &self.tx {
            assert_eq!(txn_contents(t), *m, "the transaction departs from its model");
        }
    }

    /// Run one operation and check it.
    // Outside tests the simulated disk is the only backend.
    #[cfg_attr(not(test), allow(irrefutable_let_patterns))]
    pub fn apply(&mut self, op: Op) {
        match op {
            Op::Insert { .. }
            | Op::Remove { .. }
            | Op::Put { .. }
            | Op::Delete { .. }
            | Op::MakeMap { .. }
            | Op::Clear { .. }
                if self.poisoned => {}
            Op::Insert { key, value } => {
                let Some((t, m)) = self.tx() else { return };
                let res = t.insert(&key, &value);
                let expect = match m.get(&key) {
                    Some(Val::Map(_)) => None,
                    _ => Some(m.insert(key.clone(), Val::plain(&value)).is_some()),
                };
                match (res, expect) {
                    (Ok(replaced), Some(was)) => {
                        assert_eq!(replaced, was, "insert reports a replaced value");
                        assert_eq!(t.get(&key).expect("get"), Some(&value[..]));
                        assert_eq!(t.len().expect("len"), m.len());
                    }
                    (res, expect) => {
                        self.settle_map_op("insert", res.map(|_| ()), expect.is_none())
                    }
                }
            }
            Op::Put { path, key, tag, inline, parts } => {
                let Some((t, m)) = self.tx() else { return };
                let kind = tag.map_or(Kind::Bytes, Kind::Tagged);
                let refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
                let res = t
                    .map_mut_path(&path)
                    .and_then(|mut map| map.insert_parts(&key, kind, &inline, &refs));
                let expect = match model_map(m, &path) {
                    Some(map) if !matches!(map.get(&key), Some(Val::Map(_))) => {
                        Some(map.insert(key, Val::of(kind, &inline, &parts)).is_some())
                    }
                    _ => None,
                };
                match (res, expect) {
                    (Ok(replaced), Some(was)) => assert_eq!(replaced, was),
                    (res, expect) => self.settle_map_op("put", res.map(|_| ()), expect.is_none()),
                }
                self.txn_matches();
            }
            Op::Delete { path, key } => {
                let Some((t, m)) = self.tx() else { return };
                let res = t.map_mut_path(&path).and_then(|mut map| map.remove(&key));
                let expect = model_map(m, &path).map(|map| map.remove(&key).is_some());
                match (res, expect) {
                    (Ok(found), Some(was)) => assert_eq!(found, was),
                    (res, expect) => {
                        self.settle_map_op("delete", res.map(|_| ()), expect.is_none())
                    }
                }
                self.txn_matches();
            }
            Op::MakeMap { mut path, key } => {
                let Some((t, m)) = self.tx() else { return };
                let res = t.map_mut_path(&path).and_then(|mut map| map.map_mut(&key).map(|_| ()));
                path.push(key);
                let expect = model_map(m, &path).is_none();
                self.settle_map_op("map_mut", res, expect);
                self.txn_matches();
            }
            Op::Clear { path } => {
                let Some((t, m)) = self.tx() else { return };
                let res = t.map_mut_path(&path).and_then(|mut map| map.clear());
                let expect = model_map(m, &path).map(|map| map.clear()).is_none();
                self.settle_map_op("clear", res, expect);
                self.txn_matches();
            }
            Op::Remove { key } => {
                let Some((t, m)) = self.tx() else { return };
                let was = m.remove(&key).is_some();
                match t.remove(&key) {
                    Ok(found) => {
                        assert_eq!(found, was, "remove reports the key's presence");
                        assert_eq!(t.get(&key).expect("get"), None);
                        assert_eq!(t.len().expect("len"), m.len());
                    }
                    Err(e) => {
                        self.tx = None;
                        self.failure("remove", e);
                    }
                }
            }
            Op::Commit { .. } if self.poisoned => {}
            Op::Commit { durable } => {
                let Some((mut t, m)) = self.tx.take() else { return };
                t.set_durability(if durable { Durability::Immediate } else { Durability::None });
                self.history.begin(&m);
                match t.commit() {
                    Ok(()) => {
                        self.history.acknowledge(m, durable);
                        self.verify_readers();
                    }
                    Err(e) => self.failure("commit", e),
                }
            }
            Op::Pipelined { .. } if self.poisoned => {}
            Op::Pipelined { key, value } => {
                let Some((t, m)) = self.tx.take() else { return };
                self.history.begin(&m);
                let first = match t.commit_pending() {
                    Ok(p) => p,
                    Err(e) => return self.failure("commit_pending", e),
                };
                // The second transaction builds on the staged one, which it contains. (A key
                // that holds a map gets a suffix: replacing a map by bytes is an error.)
                let mut key = key;
                while matches!(m.get(&key), Some(Val::Map(_))) {
                    key.push(b'+');
                }
                let mut second = m.clone();
                second.insert(key.clone(), Val::plain(&value));
                self.history.begin_pipelined(&second);
                let res = self.heap().begin_write().and_then(|mut t2| {
                    assert_eq!(txn_contents(&t2), m, "a transaction sees the staged commit");
                    t2.insert(&key, &value)?;
                    t2.commit_pending()
                });
                // The first is acknowledged by its own wait, whatever became of the second (a
                // second that failed, on a full disk say, leaves the first staged and synced).
                match first.wait() {
                    Ok(()) => {
                        self.history.pipelined.clear();
                        self.history.acknowledge(m, true);
                    }
                    Err(e) => return self.failure("staged commit", e),
                }
                match res.and_then(|p| p.wait()) {
                    Ok(()) => {
                        self.history.acknowledge(second, true);
                        self.verify_readers();
                    }
                    Err(e) => self.failure("pipelined commit", e),
                }
            }
            Op::Abort => drop(self.tx.take()),
            Op::Checkpoint if self.poisoned || self.tx.is_some() => {}
            Op::Checkpoint => {
                let m = self.history.latest().clone();
                self.history.begin(&m);
                match self.heap().checkpoint() {
                    Ok(()) => {
                        self.history.settled();
                        self.history.acknowledge(m, true);
                    }
                    Err(e) => self.failure("checkpoint", e),
                }
            }
            Op::Compact { .. } if self.poisoned || self.tx.is_some() => {}
            Op::Compact { always } => {
                let m = self.history.latest().clone();
                self.history.begin(&m);
                match self.heap().compact_with(always) {
                    Ok(_) => {
                        self.history.settled();
                        // Compaction's last commits are durable, unless it had nothing to do.
                        let s = self.heap().stats().expect("stats");
                        self.history.acknowledge(m, s.durable_txn_id == s.txn_id);
                        if !self.failed {
                            assert_eq!(contents(self.heap()), *self.history.latest());
                            self.heap().check().expect("the integrity walk after compaction");
                        }
                        self.verify_readers();
                    }
                    Err(e) => self.failure("compact", e),
                }
            }
            Op::Check if self.poisoned => {}
            Op::Check => {
                if let Err(e) = self.heap().check() {
                    self.failure("check", e);
                }
            }
            Op::Pin if self.poisoned => {}
            Op::Pin => match self.heap().begin_read() {
                Ok(rx) => {
                    let m = self.history.latest().clone();
                    assert_eq!(snapshot(&rx).expect("a new snapshot reads"), m);
                    self.readers.push((rx, m));
                }
                Err(e) => self.failure("begin_read", e),
            },
            Op::Unpin(i) => {
                if !self.readers.is_empty() {
                    let n = self.readers.len();
                    self.readers.swap_remove(i % n);
                }
            }
            Op::Reopen => {
                // Closed first (every transaction, then the handle): its close-time work runs,
                // as at a process's orderly exit.
                self.tx = None;
                self.readers.clear();
                self.heap = None;
                let heap = match &self.backend {
                    Backend::Sim { disk, boot } => disk.open(*boot),
                    #[cfg(test)]
                    Backend::File { path, .. } => Heap::open(path),
                };
                // A failure planned on the disk is still to come: `failed` stays.
                self.recovered(heap.expect("a closed heap reopens"), false);
            }
            Op::Fail { op, kind, persistent } => {
                if let Backend::Sim { disk, .. } = &self.backend {
                    self.failed = true;
                    disk.fail(op, kind, persistent);
                }
            }
            Op::FailGrowth { skip } => {
                if let Backend::Sim { disk, .. } = &self.backend {
                    self.failed = true;
                    disk.fail_growth(skip.into());
                }
            }
            Op::Crash | Op::PowerLoss { .. } => {
                let Backend::Sim { disk, boot } = &mut self.backend else { return };
                // The crash strikes the live process: its handle and any open write transaction
                // are dropped only after the image is taken, so nothing they would do on close
                // reaches it.
                let power = op != Op::Crash;
                let after = match op {
                    Op::PowerLoss { kind, seed } => disk.power_loss(kind, seed),
                    _ => disk.process_crash(),
                };
                self.tx = None;
                self.readers.clear();
                self.heap = None;
                *disk = after;
                if power {
                    *boot += 1;
                }
                let heap = disk.open(*boot).expect("a crashed heap opens");
                self.recovered(heap, power);
                // The new disk carries no planned failure.
                self.failed = false;
            }
        }
    }

    /// `heap` was opened after a crash (a power loss when `power`) or a close: check what it
    /// recovered and continue from it.
    fn recovered(&mut self, heap: Heap, power: bool) {
        self.heap = Some(heap);
        self.heap().check().expect("the integrity walk after a crash");
        let got = contents(self.heap());
        assert!(
            self.history.acceptable(&got, power || self.failed),
            "recovered a state never acknowledged, or lost one ({} entries; latest acknowledged \
             has {})",
            got.len(),
            self.history.latest().len()
        );
        self.history.recovered(got, power, self.failed);
        self.poisoned = false;
        if power {
            // What survived is durable now only once synced; the model keeps it as the floor
            // until the next durable commit says otherwise.
            let _ = self.heap().checkpoint();
        }
    }

    /// Every held snapshot still reads as it did (when the handle can still read).
    fn verify_readers(&self) {
        if self.poisoned {
            return;
        }
        for (rx, m) in &self.readers {
            match snapshot(rx) {
                Ok(got) => assert_eq!(got, *m, "a held snapshot changed under a later commit"),
                Err(e) => assert!(self.failed, "a held snapshot failed to read: {e}"),
            }
        }
    }

    /// Run a whole workload, then [`Harness::finish`]; returns its digest.
    pub fn run(mut self, ops: impl IntoIterator<Item = Op>) -> u64 {
        for op in ops {
            self.apply(op);
        }
        self.finish()
    }

    /// End of a workload: commit what is open, and check the heap holds the latest state and
    /// passes the integrity walk. Returns a digest of the history (every acknowledged state):
    /// the same workload must always give the same one.
    pub fn finish(mut self) -> u64 {
        self.apply(Op::Commit { durable: false });
        let digest = xxhash_rust::xxh3::xxh3_64(format!("{:?}", self.history.acked).as_bytes());
        if self.poisoned {
            return digest;
        }
        assert_eq!(contents(self.heap()), *self.history.latest());
        self.heap().check().expect("the integrity walk at the end");
        digest
    }
}
