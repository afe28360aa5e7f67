//! One adapter per store behind [`Store`]: the workload sees only this trait.
//!
//! Each adapter is configured the way its own documentation recommends for the mode, with
//! defaults otherwise: durable = every commit is on disk when it returns (the store's own
//! fsync), no-sync = the store's mode that skips the sync. Reads open one read transaction per
//! thread and check every value they get.

use pheap::prelude::*;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::data::Data;

/// The stores in the order of every table.
pub const STORES: [&str; 5] = ["pheap", "LMDB", "redb", "sled", "HashMap"];

pub trait Store: Sync + Sized {
    /// Opens the store in the empty or existing directory `dir`.
    fn open(dir: &Path, durable: bool) -> Self;
    /// Inserts pairs `range` of `data` in one transaction and commits it.
    fn insert(&mut self, data: &Data, range: Range<usize>);
    /// Removes keys `range` of `data` in one transaction and commits it.
    fn remove(&mut self, data: &Data, range: Range<usize>);
    /// Entries in the latest commit.
    fn len(&self) -> u64;
    /// Gets every key of `order` in one read transaction and checks its value; returns how
    /// many were found.
    fn read(&self, data: &Data, order: &[u32]) -> u64;
    /// Makes everything written so far durable (no-op when every commit already is).
    fn sync(&mut self);
    /// Inserts one pair in a transaction of its own, committed in the store's mode, from any
    /// thread (the concurrent-commit phase).
    fn commit_one(&self, key: &[u8], value: &[u8]);
}

/// Runs `f` with the adapter named `name`.
#[macro_export]
macro_rules! with_store {
    ($name:expr, $S:ident => $body:expr) => {
        match $name {
            "pheap" => {
                type $S = $crate::stores::Pheap;
                $body
            }
            "LMDB" => {
                type $S = $crate::stores::Lmdb;
                $body
            }
            "redb" => {
                type $S = $crate::stores::Redb;
                $body
            }
            "sled" => {
                type $S = $crate::stores::Sled;
                $body
            }
            "HashMap" => {
                type $S = $crate::stores::StdHashMap;
                $body
            }
            other => panic!("unknown store {other}"),
        }
    };
}

fn read_all(data: &Data, order: &[u32], mut get: impl FnMut(&[u8]) -> Option<bool>) -> u64 {
    let mut found = 0;
    for &i in order {
        match get(data.key(i as usize)) {
            Some(true) => found += 1,
            Some(false) => panic!("wrong value for key {i}"),
            None => {}
        }
    }
    found
}

pub struct Pheap(pheap::Heap);

impl Store for Pheap {
    fn commit_one(&self, key: &[u8], value: &[u8]) {
        let mut tx = self.0.begin_write().unwrap();
        tx.insert(key, value).unwrap();
        tx.commit().unwrap();
    }
    fn open(dir: &Path, durable: bool) -> Self {
        let durability =
            if durable { pheap::Durability::Immediate } else { pheap::Durability::None };
        let heap = pheap::Heap::options()
            .durability(durability)
            .open(dir.join("data.pheap"))
            .expect("open pheap");
        Pheap(heap)
    }
    fn insert(&mut self, data: &Data, range: Range<usize>) {
        let mut tx = self.0.begin_write().unwrap();
        let mut buf = [0u8; 256];
        if range.len() == 1 {
            tx.insert(data.key(range.start), data.value(range.start, &mut buf)).unwrap();
        } else {
            // A batch: insert_many sorts it by hash and, into an empty map, builds the trie
            // bottom-up. Its values are made here, as a user's batch would hold them.
            let batch: Vec<(&[u8], Vec<u8>)> =
                range.map(|i| (data.key(i), data.value(i, &mut buf).to_vec())).collect();
            tx.insert_many(batch).unwrap();
        }
        tx.commit().unwrap();
    }
    fn remove(&mut self, data: &Data, range: Range<usize>) {
        let mut tx = self.0.begin_write().unwrap();
        for i in range {
            assert!(tx.remove(data.key(i)).unwrap());
        }
        tx.commit().unwrap();
    }
    fn len(&self) -> u64 {
        self.0.begin_read().unwrap().len().unwrap() as u64
    }
    fn read(&self, data: &Data, order: &[u32]) -> u64 {
        let tx = self.0.begin_read().unwrap();
        read_all(data, order, |k| tx.get(k).unwrap().map(|v| data.check(k, v)))
    }
    fn sync(&mut self) {
        self.0.checkpoint().unwrap();
    }
}

type Bytes = heed::types::Bytes;

pub struct Lmdb {
    env: heed::Env,
    db: heed::Database<Bytes, Bytes>,
}

impl Store for Lmdb {
    fn commit_one(&self, key: &[u8], value: &[u8]) {
        let mut tx = self.env.write_txn().unwrap();
        self.db.put(&mut tx, key, value).unwrap();
        tx.commit().unwrap();
    }
    fn open(dir: &Path, durable: bool) -> Self {
        let mut options = heed::EnvOpenOptions::new();
        options.map_size(64 << 30);
        if !durable {
            // SAFETY: NO_SYNC only weakens durability after a machine crash, which is what this
            // mode measures; nothing else opens this environment.
            unsafe { options.flags(heed::EnvFlags::NO_SYNC) };
        }
        // SAFETY: the directory is this benchmark's own and opened once per process.
        let env = unsafe { options.open(dir) }.expect("open LMDB");
        let mut tx = env.write_txn().unwrap();
        let db = env.create_database(&mut tx, None).unwrap();
        tx.commit().unwrap();
        Lmdb { env, db }
    }
    fn insert(&mut self, data: &Data, range: Range<usize>) {
        let mut tx = self.env.write_txn().unwrap();
        let mut buf = [0u8; 256];
        for i in range {
            self.db.put(&mut tx, data.key(i), data.value(i, &mut buf)).unwrap();
        }
        tx.commit().unwrap();
    }
    fn remove(&mut self, data: &Data, range: Range<usize>) {
        let mut tx = self.env.write_txn().unwrap();
        for i in range {
            assert!(self.db.delete(&mut tx, data.key(i)).unwrap());
        }
        tx.commit().unwrap();
    }
    fn len(&self) -> u64 {
        self.db.len(&self.env.read_txn().unwrap()).unwrap()
    }
    fn read(&self, data: &Data, order: &[u32]) -> u64 {
        let tx = self.env.read_txn().unwrap();
        read_all(data, order, |k| self.db.get(&tx, k).unwrap().map(|v| data.check(k, v)))
    }
    fn sync(&mut self) {
        self.env.force_sync().unwrap();
    }
}

use redb::ReadableDatabase as _;

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("data");

pub struct Redb {
    db: redb::Database,
    durability: redb::Durability,
}

impl Redb {
    fn write(&self, f: impl FnOnce(&mut redb::Table<&[u8], &[u8]>)) {
        let mut tx = self.db.begin_write().unwrap();
        tx.set_durability(self.durability).unwrap();
        {
            let mut table = tx.open_table(TABLE).unwrap();
            f(&mut table);
        }
        tx.commit().unwrap();
    }
}

impl Store for Redb {
    fn commit_one(&self, key: &[u8], value: &[u8]) {
        self.write(|table| {
            table.insert(key, value).unwrap();
        });
    }
    fn open(dir: &Path, durable: bool) -> Self {
        let db = redb::Database::create(dir.join("data.redb")).expect("open redb");
        let durability = if durable { redb::Durability::Immediate } else { redb::Durability::None };
        let store = Redb { db, durability };
        store.write(|_| {});
        store
    }
    fn insert(&mut self, data: &Data, range: Range<usize>) {
        self.write(|table| {
            let mut buf = [0u8; 256];
            for i in range {
                table.insert(data.key(i), data.value(i, &mut buf)).unwrap();
            }
        });
    }
    fn remove(&mut self, data: &Data, range: Range<usize>) {
        self.write(|table| {
            for i in range {
                assert!(table.remove(data.key(i)).unwrap().is_some());
            }
        });
    }
    fn len(&self) -> u64 {
        use redb::ReadableTableMetadata;
        let tx = self.db.begin_read().unwrap();
        tx.open_table(TABLE).unwrap().len().unwrap()
    }
    fn read(&self, data: &Data, order: &[u32]) -> u64 {
        let tx = self.db.begin_read().unwrap();
        let table = tx.open_table(TABLE).unwrap();
        read_all(data, order, |k| table.get(k).unwrap().map(|v| data.check(k, v.value())))
    }
    fn sync(&mut self) {
        let durability = std::mem::replace(&mut self.durability, redb::Durability::Immediate);
        self.write(|_| {});
        self.durability = durability;
    }
}

/// sled has no multi-key transactions on one tree short of `apply_batch`, which is atomic:
/// batches use it, and durable mode flushes after each (what redb's benchmark does too).
pub struct Sled {
    db: sled::Db,
    durable: bool,
}

impl Store for Sled {
    fn commit_one(&self, key: &[u8], value: &[u8]) {
        self.db.insert(key, value).unwrap();
        if self.durable {
            self.db.flush().unwrap();
        }
    }
    fn open(dir: &Path, durable: bool) -> Self {
        let db = sled::Config::new().path(dir).open().expect("open sled");
        Sled { db, durable }
    }
    fn insert(&mut self, data: &Data, range: Range<usize>) {
        let mut batch = sled::Batch::default();
        let mut buf = [0u8; 256];
        for i in range {
            batch.insert(data.key(i), data.value(i, &mut buf));
        }
        self.db.apply_batch(batch).unwrap();
        if self.durable {
            self.db.flush().unwrap();
        }
    }
    fn remove(&mut self, data: &Data, range: Range<usize>) {
        let mut batch = sled::Batch::default();
        for i in range {
            batch.remove(data.key(i));
        }
        self.db.apply_batch(batch).unwrap();
        if self.durable {
            self.db.flush().unwrap();
        }
    }
    fn len(&self) -> u64 {
        self.db.len() as u64
    }
    fn read(&self, data: &Data, order: &[u32]) -> u64 {
        read_all(data, order, |k| self.db.get(k).unwrap().map(|v| data.check(k, &v)))
    }
    fn sync(&mut self) {
        self.db.flush().unwrap();
    }
}

/// The in-memory reference: the physical limit for a point lookup. Not persistent; its
/// "durable" and "no-sync" runs are the same.
pub struct StdHashMap(HashMap<Box<[u8]>, Box<[u8]>>);

impl Store for StdHashMap {
    fn commit_one(&self, _: &[u8], _: &[u8]) {
        unreachable!("the in-memory map has no commits to measure")
    }
    fn open(_: &Path, _: bool) -> Self {
        StdHashMap(HashMap::new())
    }
    fn insert(&mut self, data: &Data, range: Range<usize>) {
        let mut buf = [0u8; 256];
        for i in range {
            self.0.insert(data.key(i).into(), data.value(i, &mut buf).into());
        }
    }
    fn remove(&mut self, data: &Data, range: Range<usize>) {
        for i in range {
            assert!(self.0.remove(data.key(i)).is_some());
        }
    }
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read(&self, data: &Data, order: &[u32]) -> u64 {
        read_all(data, order, |k| self.0.get(k).map(|v| data.check(k, v)))
    }
    fn sync(&mut self) {}
}

/// Opens the store in `dir` read-only where the store allows it and gets one key: the resume
/// child. Calls `report` with the time to open, the time to open and get, and whether the value
/// is right (None: key missing), before any handle is dropped, so that no store's teardown
/// counts.
pub fn open_and_get(
    store: &str,
    dir: &Path,
    key: &[u8],
    value_len: usize,
    report: impl FnOnce(Duration, Duration, Option<bool>),
) {
    let ok = |v: &[u8]| crate::data::check(key, v, value_len);
    let t = Instant::now();
    match store {
        "pheap" => {
            let heap = pheap::Heap::options()
                .create(false)
                .read_only(true)
                .open(dir.join("data.pheap"))
                .expect("open pheap");
            let opened = t.elapsed();
            let tx = heap.begin_read().unwrap();
            let found = tx.get(key).unwrap().map(ok);
            report(opened, t.elapsed(), found);
        }
        "LMDB" => {
            let mut options = heed::EnvOpenOptions::new();
            options.map_size(64 << 30);
            // SAFETY: read-only open of this benchmark's own environment.
            let env =
                unsafe { options.flags(heed::EnvFlags::READ_ONLY).open(dir) }.expect("open LMDB");
            let tx = env.read_txn().unwrap();
            let db: heed::Database<Bytes, Bytes> =
                env.open_database(&tx, None).unwrap().expect("no db");
            let opened = t.elapsed();
            let found = db.get(&tx, key).unwrap().map(ok);
            report(opened, t.elapsed(), found);
        }
        "redb" => {
            let db = redb::ReadOnlyDatabase::open(dir.join("data.redb")).expect("open redb");
            let opened = t.elapsed();
            let tx = db.begin_read().unwrap();
            let table = tx.open_table(TABLE).unwrap();
            let found = table.get(key).unwrap().map(|v| ok(v.value()));
            report(opened, t.elapsed(), found);
        }
        "sled" => {
            let db = sled::Config::new().path(dir).open().expect("open sled");
            let opened = t.elapsed();
            let found = db.get(key).unwrap().map(|v| ok(&v));
            report(opened, t.elapsed(), found);
        }
        other => panic!("no resume for {other}"),
    }
}
