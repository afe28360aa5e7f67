//! The operations a workload is made of, decoded from fuzzer bytes or drawn by proptest.

/// One step of a workload. Steps that do not apply (a commit with no transaction open, anything
/// on a handle poisoned by a failure) are skipped by the [`super::Harness`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Insert or replace, in the open write transaction (one begins if none is open).
    Insert {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove, in the open write transaction.
    Remove {
        /// The key.
        key: Vec<u8>,
    },
    /// Insert or replace a value of any shape in the map at `path` (levels created as needed),
    /// in the open write transaction.
    Put {
        /// Keys of the maps above, from the top level.
        path: Vec<Vec<u8>>,
        /// The key.
        key: Vec<u8>,
        /// `Kind::Tagged(t)`, else `Kind::Bytes`.
        tag: Option<u8>,
        /// The inline part.
        inline: Vec<u8>,
        /// The out-of-line parts.
        parts: Vec<Vec<u8>>,
    },
    /// Remove `key` (a value, or a map with everything in it) from the map at `path`.
    Delete {
        /// Keys of the maps above.
        path: Vec<Vec<u8>>,
        /// The key.
        key: Vec<u8>,
    },
    /// Make sure the map at `path` holds a sub-map under `key` (`map_mut`).
    MakeMap {
        /// Keys of the maps above.
        path: Vec<Vec<u8>>,
        /// The key.
        key: Vec<u8>,
    },
    /// Remove every entry of the map at `path`.
    Clear {
        /// Keys of the maps.
        path: Vec<Vec<u8>>,
    },
    /// Commit the open write transaction.
    Commit {
        /// `Durability::Immediate`, else `Durability::None`.
        durable: bool,
    },
    /// Group commit on one thread (DESIGN §4.3): commit the open write transaction durably
    /// without waiting for its sync (staged), insert `key` in a new one on top of it, commit that
    /// the same way, then wait for both.
    Pipelined {
        /// The key the second transaction inserts.
        key: Vec<u8>,
        /// Its value.
        value: Vec<u8>,
    },
    /// Drop the open write transaction.
    Abort,
    /// `Heap::checkpoint`.
    Checkpoint,
    /// `Heap::compact` (`always`: even a heap already small enough).
    Compact {
        /// Compact even a small heap (the internal `compact_with(true)`).
        always: bool,
    },
    /// `Heap::check`.
    Check,
    /// Begin a read transaction and hold it.
    Pin,
    /// Drop the i-th held read transaction (modulo their number).
    Unpin(usize),
    /// Close the heap (every transaction dropped) and open it again.
    Reopen,
    /// Fail the `op`-th I/O operation from now with failure `kind` (see `SimDisk::fail`).
    Fail {
        /// Operations from now.
        op: u64,
        /// Failure kind, modulo 4.
        kind: u8,
        /// Every later operation fails too.
        persistent: bool,
    },
    /// Fail the file's growth after `skip` more growths with ENOSPC, once (a full disk met by
    /// a growing transaction: that call fails, the handle stays usable; see
    /// `SimDisk::fail_growth`).
    FailGrowth {
        /// Growths that succeed first.
        skip: u8,
    },
    /// The process dies (its page cache survives).
    Crash,
    /// The machine loses power (crash image `kind`, see `SimDisk::power_loss`) and reboots.
    PowerLoss {
        /// Crash-image kind, modulo 4.
        kind: u8,
        /// Drives the image's random choices.
        seed: u64,
    },
}

impl Op {
    /// The workload three bytes at a time, as the fuzz target `ops_crash` reads it (the
    /// committed corpus is in this encoding: change it only with the corpus).
    pub fn decode(data: &[u8]) -> Vec<Op> {
        data.chunks(3)
            .filter_map(|op| {
                let (a, b) = (op[0], op.get(1).copied().unwrap_or(0));
                let c = op.get(2).copied().unwrap_or(0);
                Some(match a % 16 {
                    0 => Op::Remove { key: vec![b % 32] },
                    1..=5 => {
                        let len = if c == 255 { 70_000 } else { c as usize * 3 };
                        Op::Insert { key: vec![b % 32], value: vec![c; len] }
                    }
                    6..=8 => Op::Commit { durable: b % 2 == 0 },
                    9 => Op::Abort,
                    10 => Op::Checkpoint,
                    11 if b % 8 == 0 => Op::Compact { always: false },
                    11 if b % 8 == 1 => Op::Pipelined { key: vec![c % 32], value: vec![c; 40] },
                    11 if b % 8 == 2 => Op::FailGrowth { skip: c % 4 },
                    12 => Op::Fail { op: b as u64 % 16, kind: c, persistent: c % 2 == 0 },
                    13 => Op::Crash,
                    14 | 15 => Op::PowerLoss { kind: b, seed: c as u64 },
                    _ => return None,
                })
            })
            .collect()
    }
}

impl Op {
    /// A workload with maps four bytes at a time, as the fuzz target `maps_crash` reads it:
    /// the operations of [`Op::decode`] plus nested maps, parts and tags.
    pub fn decode_maps(data: &[u8]) -> Vec<Op> {
        let path = |b: u8| -> Vec<Vec<u8>> {
            match b % 4 {
                0 => vec![],
                1 => vec![b"m".to_vec()],
                2 => vec![b"m".to_vec(), vec![b % 8]],
                _ => vec![vec![b % 8]],
            }
        };
        data.chunks(4)
            .flat_map(|op| {
                let (a, b) = (op[0], op.get(1).copied().unwrap_or(0));
                let (c, d) = (op.get(2).copied().unwrap_or(0), op.get(3).copied().unwrap_or(0));
                let key = vec![b % 8];
                let len = |x: u8| match x % 8 {
                    7 => 1 << 20,
                    6 => 5000,
                    n => n as usize * 9,
                };
                match a % 8 {
                    0..=3 => Op::decode(&[a / 8 % 16, b, c]),
                    4 => vec![Op::Put {
                        path: path(c),
                        key,
                        tag: (d % 3 == 0).then_some(d),
                        inline: vec![d; len(d / 8)],
                        parts: (0..c % 3).map(|i| vec![i ^ d; len(d / 8 + i)]).collect(),
                    }],
                    5 => vec![Op::Delete { path: path(c), key }],
                    6 => vec![Op::MakeMap { path: path(c), key }],
                    _ => vec![Op::Clear { path: path(c) }],
                }
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) use strategies::{file_ops, sim_ops};

#[cfg(test)]
mod strategies {
    use proptest::prelude::*;

    use super::Op;

    /// A key of the simulated-disk workloads: empty, longer than a slab record, or short.
    fn sim_key(k: u8) -> Vec<u8> {
        match k % 8 {
            0 => Vec::new(),
            1 => vec![k; 70_000],
            _ => format!("key-{k}").into_bytes(),
        }
    }

    /// Paths of the map workloads: the top level, a sub-map, a map two levels down, and a key
    /// that plain inserts also use (so a level may hold bytes: a clear error).
    fn map_path() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop_oneof![
            Just(vec![]),
            Just(vec![b"m".to_vec()]),
            (0u8..3).prop_map(|k| vec![b"m".to_vec(), vec![k]]),
            (2u8..5).prop_map(|k| vec![format!("key-{k}").into_bytes()]),
        ]
    }

    /// Nested maps, values of several parts (up to 1 MiB) and tagged values.
    fn map_ops() -> impl Strategy<Value = Op> {
        let len = prop_oneof![6 => 0usize..200, 2 => 4000usize..6000, 1 => Just(1usize << 20)];
        let put = (
            map_path(),
            0u8..6,
            prop::option::of(any::<u8>()),
            len.clone(),
            prop::collection::vec(len, 0..3),
            any::<u8>(),
        )
            .prop_map(|(path, k, tag, ilen, plens, fill)| Op::Put {
                path,
                key: format!("key-{k}").into_bytes(),
                tag,
                inline: vec![fill; ilen],
                parts: plens.into_iter().map(|n| vec![fill ^ n as u8; n]).collect(),
            });
        prop_oneof![
            6 => put,
            2 => (map_path(), 0u8..6)
                .prop_map(|(path, k)| Op::Delete { path, key: format!("key-{k}").into_bytes() }),
            2 => (map_path(), 0u8..6)
                .prop_map(|(path, k)| Op::MakeMap { path, key: format!("key-{k}").into_bytes() }),
            1 => map_path().prop_map(|path| Op::Clear { path }),
        ]
    }

    /// Workloads on the simulated disk: every operation but injected I/O failures (the fuzz
    /// target covers those), with crashes, power losses and full disks met by growth (which
    /// poison nothing: the workload goes on).
    pub(crate) fn sim_ops() -> impl Strategy<Value = Op> {
        let vlen = prop_oneof![8 => 0u32..300, 1 => 60_000u32..80_000];
        let insert = (0u8..40, vlen, any::<u8>()).prop_map(|(k, len, fill)| Op::Insert {
            key: sim_key(k),
            value: (0..len).map(|i| fill.wrapping_add(i as u8)).collect(),
        });
        prop_oneof![
            30 => insert,
            10 => (0u8..40).prop_map(|k| Op::Remove { key: sim_key(k) }),
            8 => any::<bool>().prop_map(|durable| Op::Commit { durable }),
            3 => (0u8..40, any::<u8>())
                .prop_map(|(k, v)| Op::Pipelined { key: sim_key(k), value: vec![v; 30] }),
            2 => Just(Op::Abort),
            2 => Just(Op::Checkpoint),
            2 => Just(Op::Crash),
            2 => (0u8..4, any::<u64>()).prop_map(|(kind, seed)| Op::PowerLoss { kind, seed }),
            1 => (0u8..3).prop_map(|skip| Op::FailGrowth { skip }),
            2 => Just(Op::Check),
            3 => Just(Op::Pin),
            2 => any::<usize>().prop_map(Op::Unpin),
            1 => Just(Op::Compact { always: true }),
            1 => Just(Op::Reopen),
            8 => map_ops(),
        ]
    }

    fn file_key(k: u16) -> Vec<u8> {
        format!("key/{k}/{}", "x".repeat(k as usize % 40)).into_bytes()
    }

    /// Workloads on real files: no crash or failure (those need the simulated disk).
    pub(crate) fn file_ops() -> impl Strategy<Value = Op> {
        let len = prop_oneof![20 => 0u32..400, 1 => 66_000u32..90_000];
        let insert = (0u16..300, len, any::<u8>()).prop_map(|(k, len, fill)| Op::Insert {
            key: file_key(k),
            value: (0..len).map(|i| (i as u8) ^ fill ^ k as u8).collect(),
        });
        prop_oneof![
            30 => insert,
            10 => (0u16..300).prop_map(|k| Op::Remove { key: file_key(k) }),
            6 => any::<bool>().prop_map(|durable| Op::Commit { durable }),
            1 => Just(Op::Abort),
            1 => Just(Op::Checkpoint),
            2 => Just(Op::Reopen),
            2 => Just(Op::Pin),
            2 => any::<usize>().prop_map(Op::Unpin),
            1 => Just(Op::Compact { always: true }),
            6 => map_ops(),
        ]
    }
}
