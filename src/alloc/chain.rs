//! Chunk pages: immutable one-page runs holding the bottom of a long free stack or pending
//! batch, chained by offset (DESIGN §2.7). Reads are bounded, so a cycle is an error (I9).

use zerocopy::{FromBytes, IntoBytes};

use super::Allocator;
use crate::error::{Result, corrupt};
use crate::format::*;

/// Free-stack entries kept inline in the blob before the bottom ones spill into chunk pages.
pub(super) const INLINE_MAX: usize = 64;
/// Inline entries left after a spill.
pub(super) const INLINE_KEEP: usize = 16;
/// A partial chunk page is written only with at least this many entries.
pub(super) const MIN_PARTIAL: usize = 48;

impl Allocator {
    /// Entries and successor of the chunk page at `off`.
    pub(crate) fn read_chunk(&self, off: u64) -> Result<(u64, Vec<u64>)> {
        let h = self.run_header(off)?;
        if h.kind.get() != RUN_META || h.pages.get() != 1 {
            return Err(corrupt(off, "chunk is not a one-page metadata run"));
        }
        let body = self.read(Offset(off + RUN_HEADER_SIZE), PAGE_SIZE - RUN_HEADER_SIZE)?;
        let (ch, rest) =
            ChunkHeader::read_from_prefix(body).map_err(|_| corrupt(off, "chunk header"))?;
        let n = ch.count.get() as usize;
        if n == 0 || n > CHUNK_CAPACITY {
            return Err(corrupt(off, "chunk count"));
        }
        let (entries, _) = read_u64s(rest, n).ok_or(corrupt(off, "chunk"))?;
        if chunk_checksum(ch.next.get(), &entries) != ch.checksum.get() {
            return Err(corrupt(off, "chunk checksum mismatch"));
        }
        let next = ch.next.get();
        if next != 0 {
            self.check_page(next)?;
        }
        Ok((next, entries))
    }

    /// Every chunk of the chain starting at `head`: (page, entries). Bounded by the number of
    /// pages below `end` whatever the file says, so a cycle is an error, not a hang (I9).
    pub(crate) fn read_chain(&self, head: u64) -> Result<Vec<(u64, Vec<u64>)>> {
        let max = (self.end - DATA_START) / PAGE_SIZE;
        let mut out = Vec::new();
        let mut chain = head;
        while chain != 0 {
            if out.len() as u64 >= max {
                return Err(corrupt(chain, "chunk chain longer than the file allows"));
            }
            let (next, entries) = self.read_chunk(chain)?;
            out.push((chain, entries));
            chain = next;
        }
        Ok(out)
    }

    /// Write `entries` as a chain of chunk pages ending in `next`; returns the chain's head.
    fn write_chain(&mut self, entries: &[u64], mut next: u64) -> Result<u64> {
        for part in entries.chunks(CHUNK_CAPACITY) {
            let page = self.alloc_meta_page()?;
            let mut buf = Vec::with_capacity(CHUNK_HEADER_SIZE as usize + part.len() * 8);
            let ch = ChunkHeader {
                next: next.into(),
                count: (part.len() as u32).into(),
                checksum: chunk_checksum(next, part).into(),
            };
            buf.extend_from_slice(ch.as_bytes());
            for e in part {
                buf.extend_from_slice(&e.to_le_bytes());
            }
            self.pager.write(Offset(page + RUN_HEADER_SIZE), &buf)?;
            next = page;
        }
        Ok(next)
    }

    /// Move all but the newest entries of a long stack top into chunk pages below it.
    pub(super) fn spill(
        &mut self,
        top: &mut Vec<u64>,
        below: &mut u64,
        below_len: &mut u64,
    ) -> Result<()> {
        let n = top.len();
        if n <= INLINE_MAX {
            return Ok(());
        }
        let excess = n - INLINE_KEEP;
        let rem = excess % CHUNK_CAPACITY;
        let count = excess - rem + if rem >= MIN_PARTIAL { rem } else { 0 };
        let moved: Vec<u64> = top.drain(..count).collect();
        *below = self.write_chain(&moved, *below)?;
        *below_len += count as u64;
        Ok(())
    }
}

pub(super) fn read_u64s(bytes: &[u8], n: usize) -> Option<(Vec<u64>, &[u8])> {
    let need = n.checked_mul(8)?;
    if bytes.len() < need {
        return None;
    }
    let (a, rest) = bytes.split_at(need);
    Some((a.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8"))).collect(), rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::alloc::Pager;
    use crate::storage::Storage;
    use crate::storage::mem::MemStorage;

    #[test]
    fn a_cyclic_chunk_chain_is_an_error_not_a_hang() {
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new(64 << 20));
        storage.grow(DATA_START).unwrap();
        let mut a = Allocator::empty(Pager::new(storage));
        a.begin_txn(TxnId(0), TxnId(0)).unwrap();
        let page = a.alloc_meta_page().unwrap();
        // One entry, pointing back at itself, as a hostile file could.
        let entries = [DATA_START + 64];
        let ch = ChunkHeader {
            next: page.into(),
            count: 1.into(),
            checksum: chunk_checksum(page, &entries).into(),
        };
        let mut body = ch.as_bytes().to_vec();
        body.extend_from_slice(&entries[0].to_le_bytes());
        a.pager.write(Offset(page + RUN_HEADER_SIZE), &body).unwrap();
        assert!(matches!(a.read_chain(page), Err(crate::Error::Corrupt { .. })));
        a.classes[0].below = page;
        a.classes[0].below_len = u64::MAX;
        assert!(a.inventory().is_err());
        // An empty chunk is never written: refused.
        let empty = ChunkHeader {
            next: 0.into(),
            count: 0.into(),
            checksum: chunk_checksum(0, &[]).into(),
        };
        a.pager.write(Offset(page + RUN_HEADER_SIZE), empty.as_bytes()).unwrap();
        assert!(a.read_chunk(page).is_err());
    }
}
