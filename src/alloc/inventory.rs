//! What the allocator holds, for `stats` and the integrity walk: pending bytes per batch, and
//! every free or pending extent and metadata run.

use std::collections::HashMap;

use super::Allocator;
use crate::error::{Result, corrupt};
use crate::format::*;

impl Allocator {
    /// Bytes of each pending batch (freed, not yet reusable), with the commit that freed it.
    pub(crate) fn pending_bytes(&self) -> Result<Vec<(TxnId, u64)>> {
        let mut out = Vec::new();
        for p in self.pending.iter().chain(&self.pending_ro) {
            out.push((p.txn, self.read_batch(p)?.bytes()));
        }
        Ok(out)
    }

    /// Every free or pending extent and every metadata run, for the integrity walk:
    /// (offset, length, what). Also returns the slab cursors (span, next_slot) per class.
    pub(crate) fn inventory(&self) -> Result<Inventory> {
        let mut inv = Inventory::default();
        if let Some((start, pages)) = self.blob {
            inv.meta_runs.push((start, pages));
        }
        for (c, st) in self.classes.iter().enumerate() {
            let s = CLASS_SIZES[c] as u64;
            for &o in &st.top {
                inv.free.push((o, s));
            }
            let mut seen = 0u64;
            for (page, entries) in self.read_chain(st.below)? {
                inv.meta_runs.push((page, 1));
                seen += entries.len() as u64;
                inv.free.extend(entries.into_iter().map(|o| (o, s)));
            }
            if seen != st.below_len {
                return Err(corrupt(st.below, "free chain shorter than recorded"));
            }
            if st.span != 0 {
                inv.cursors.insert(st.span, st.next_slot);
            }
        }
        for (&start, &pages) in &self.runs {
            inv.free_runs.push((start, pages));
        }
        for p in self.pending.iter().chain(&self.pending_ro) {
            let batch = self.read_batch(p)?;
            inv.meta_runs.extend(batch.pages.iter().map(|&page| (page, 1)));
            if batch.freed.len() as u64 != p.chained + p.inline.len() as u64 {
                return Err(corrupt(p.chain, "pending chain length differs from the record"));
            }
            for freed in batch.freed {
                match freed {
                    Freed::Slot { off, class } => inv.free.push((off, CLASS_SIZES[class] as u64)),
                    Freed::Run { start, pages } => inv.pending_runs.push((start, pages)),
                }
            }
        }
        inv.end = self.end;
        inv.live_bytes = self.live_bytes;
        inv.free_bytes = self.free_bytes;
        Ok(inv)
    }
}

/// What the allocator knows about space, for the integrity walk.
#[derive(Debug, Default)]
pub(crate) struct Inventory {
    /// Free or pending slab slots: (offset, slot size).
    pub free: Vec<(u64, u64)>,
    /// Free runs: (start, pages).
    pub free_runs: Vec<(u64, u64)>,
    /// Runs freed but pending: (start, pages).
    pub pending_runs: Vec<(u64, u64)>,
    /// Allocator metadata runs in use: (start, pages).
    pub meta_runs: Vec<(u64, u64)>,
    /// Span being carved -> next never-used slot.
    pub cursors: HashMap<u64, u32>,
    pub end: u64,
    pub live_bytes: u64,
    pub free_bytes: u64,
}
