//! The simulated disk: a heap on memory that tracks what was synced, fails chosen operations,
//! and produces crash images. Every test and fuzz target opens heaps on it through here.

use std::path::Path;
use std::sync::Arc;

use crate::storage::mem::{CrashKind, FailKind, FailPlan, MemStorage};
use crate::storage::registry::Registry;
use crate::{Heap, HeapOptions, Result};

/// Capacity of a simulated disk. Above glibc's largest mmap threshold (32 MiB), so each one is
/// lazily zeroed memory from the kernel, not a memset of reused heap memory.
pub(crate) const CAP: u64 = 64 << 20;

/// A simulated disk holding one heap.
#[derive(Debug, Clone)]
pub struct SimDisk(Arc<MemStorage>);

impl SimDisk {
    /// A new, empty heap (fixed hash seed, so runs repeat).
    pub fn new() -> SimDisk {
        let img = crate::meta::new_heap_image_seeded(&boot_id(0), [7; 16]);
        SimDisk(Arc::new(MemStorage::from_image(&img, CAP)))
    }

    /// Open the heap as a process of boot `n` would (a new `n` is a reboot).
    pub fn open(&self, n: u32) -> Result<Heap> {
        open_mem(&self.0, boot_id(n))
    }

    /// Fail operation `op` (counted from now) with `kind` (0 EIO, 1 ENOSPC, 2 short write,
    /// 3 fsync losing the unsynced writes), and every later one if `persistent`.
    pub fn fail(&self, op: u64, kind: u8, persistent: bool) {
        let kind = [FailKind::Eio, FailKind::NoSpace, FailKind::Short, FailKind::SyncLost]
            [kind as usize % 4];
        self.0.set_fail(Some(FailPlan {
            at: self.0.ops() + op,
            persistent,
            syncs_only: false,
            kind,
        }));
    }

    /// Fail the file's growth after `skip` more growths with ENOSPC, once: the full disk that
    /// a growing commit meets (it fails that commit and poisons nothing). Composes with
    /// [`SimDisk::fail`].
    pub fn fail_growth(&self, skip: u64) {
        self.0.fail_growth(Some(skip));
    }

    /// The disk a new process finds after this one died (the page cache survives).
    pub fn process_crash(&self) -> SimDisk {
        SimDisk(Arc::new(self.0.crash_clone()))
    }

    /// The disk after a power loss: `kind` 0 durable only, 1 random subset of unsynced writes,
    /// 2 last write torn, 3 growth lost.
    pub fn power_loss(&self, kind: u8, seed: u64) -> SimDisk {
        let kind = [
            CrashKind::DurableOnly,
            CrashKind::RandomSubset,
            CrashKind::TornLast,
            CrashKind::GrowthLost,
        ][kind as usize % 4];
        SimDisk(Arc::new(MemStorage::from_image(&self.0.crash_image(kind, seed), CAP)))
    }
}

impl Default for SimDisk {
    fn default() -> Self {
        SimDisk::new()
    }
}

/// A heap on the simulated disk `storage`, opened as a process of the boot `boot` would (tests
/// simulate reboots with it). The one opener of the simulated disk.
pub(crate) fn open_mem(storage: &Arc<MemStorage>, boot: [u8; 16]) -> Result<Heap> {
    Heap::from_storage_with_boot(
        storage.clone(),
        Registry::private()?,
        &HeapOptions::default(),
        Path::new("sim"),
        boot,
    )
}

/// Boot `n`'s id: distinct for every `n`, and never all zeros (which means "unknown").
pub(crate) fn boot_id(n: u32) -> [u8; 16] {
    let mut b = [0xb0u8; 16];
    b[..4].copy_from_slice(&n.to_le_bytes());
    b
}
