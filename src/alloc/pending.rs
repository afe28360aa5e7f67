//! Pending batches: records freed by a commit, reusable once no snapshot that sees them is
//! pinned and (unless reader-only) a later commit is durable (I4, I5).

use super::{Allocator, Pending};
use crate::error::{Result, corrupt};
use crate::format::*;

/// A pending batch read whole: its entries decoded and validated, and the chunk pages holding
/// the part below its inline top.
pub(super) struct Batch {
    pub freed: Vec<Freed>,
    pub pages: Vec<u64>,
}

impl Batch {
    /// Bytes the batch frees.
    pub fn bytes(&self) -> u64 {
        self.freed
            .iter()
            .map(|f| match *f {
                Freed::Slot { class, .. } => CLASS_SIZES[class] as u64,
                Freed::Run { pages, .. } => pages * PAGE_SIZE,
            })
            .sum()
    }
}

impl Allocator {
    /// Read the batch `p`: its inline entries and its chain, decoded.
    pub(super) fn read_batch(&self, p: &Pending) -> Result<Batch> {
        let mut entries = p.inline.clone();
        let mut pages = Vec::new();
        for (page, more) in self.read_chain(p.chain)? {
            entries.extend_from_slice(&more);
            pages.push(page);
        }
        Ok(Batch { freed: self.decode_freed(&entries)?, pages })
    }

    /// Validate and decode a pending batch's packed entries.
    fn decode_freed(&self, entries: &[u64]) -> Result<Vec<Freed>> {
        entries
            .iter()
            .map(|&e| {
                let f = Freed::unpack(e).ok_or_else(|| corrupt(e, "pending entry"))?;
                match f {
                    Freed::Slot { off, .. } => self.check_record(off)?,
                    Freed::Run { start, pages } => {
                        self.check_page(start)?;
                        if pages == 0 || pages > (self.end - start) / PAGE_SIZE {
                            return Err(corrupt(start, "pending run length"));
                        }
                    }
                }
                Ok(f)
            })
            .collect()
    }

    /// Make a pending batch's records free.
    pub(super) fn release(&mut self, p: Pending) -> Result<()> {
        self.dirty = true;
        let batch = self.read_batch(&p)?;
        for &page in &batch.pages {
            self.free_run(page, 1);
        }
        for freed in batch.freed {
            match freed {
                Freed::Slot { off, class } => {
                    self.freed_since_sweep += CLASS_SIZES[class] as u64;
                    self.classes[class].top.push(off)
                }
                Freed::Run { start, pages } => {
                    self.freed_since_sweep += pages * PAGE_SIZE;
                    self.add_run(start, pages)
                }
            }
        }
        Ok(())
    }

    /// Add this commit's freed entries to `queue` (merging into its newest batch when `merge`
    /// says that delays nothing), spilling a long inline part into chunk pages.
    pub(super) fn push_pending(
        &mut self,
        ro: bool,
        entries: Vec<u64>,
        txn: TxnId,
        merge: &dyn Fn(&Pending) -> bool,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let queue = if ro { &mut self.pending_ro } else { &mut self.pending };
        let mut p = match queue.pop_back() {
            Some(back) if merge(&back) => back,
            Some(back) => {
                queue.push_back(back);
                Pending { txn, inline: Vec::new(), chain: 0, chained: 0 }
            }
            None => Pending { txn, inline: Vec::new(), chain: 0, chained: 0 },
        };
        p.txn = txn;
        p.inline.extend(entries);
        let (mut chain, mut chained) = (p.chain, p.chained);
        self.spill(&mut p.inline, &mut chain, &mut chained)?;
        (p.chain, p.chained) = (chain, chained);
        if ro { &mut self.pending_ro } else { &mut self.pending }.push_back(p);
        Ok(())
    }
}
