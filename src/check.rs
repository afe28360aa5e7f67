//! The full integrity walk: every record reachable exactly once or free, every checksum, every
//! page of the file accounted for, every leaf on the path its hash names.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::error::{Result, corrupt};
use crate::format::*;
use crate::meta::Snapshot;
use crate::shared::{Shared, load_snapshot_alloc};
use crate::trie::{MapRoot, Reader};

/// What the integrity walk checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// Transaction id of the commit checked.
    pub txn_id: u64,
    /// Entries the commit records.
    pub entries: u64,
    /// Trie nodes walked, each reachable once and its checksum verified.
    pub nodes: u64,
    /// Leaves walked, in every map: each map's count equals the entries it records, each leaf
    /// is on the path its key's hash names, its checksum verified.
    pub leaves: u64,
    /// Sub-maps walked (the top-level map not counted), each reachable once.
    pub maps: u64,
    /// Out-of-line parts walked, each record reachable once, its checksum verified.
    pub parts: u64,
    /// Page runs walked (slab spans, large records, metadata, free runs).
    pub runs: u64,
    /// Bytes in records reachable from the commit (allocator metadata included): equal to the
    /// count the commit records.
    pub live_bytes: u64,
    /// Bytes free or awaiting reuse: equal to the count the commit records.
    pub free_bytes: u64,
    /// Newer commits passed over when choosing the one checked (see [`crate::Stats`]): the heap
    /// is sound, but a fallback happened.
    pub skipped_commits: Vec<crate::SkippedCommit>,
}

struct Walk<'a> {
    reader: Reader<'a>,
    hasher: crate::trie::KeyHasher,
    /// Reachable records: offset -> size.
    live: HashMap<u64, u64>,
    /// Sub-maps found and not yet walked, with the offset of their leaf and their depth: walked
    /// one after another, never by recursion (a hostile file cannot exhaust the stack).
    maps: Vec<(MapRoot, u64, usize)>,
    /// Leaves of the map being walked.
    leaves: u64,
    /// Depth of the map being walked.
    depth: usize,
    report: CheckReport,
}

fn alloc_size(size: u64) -> u64 {
    if size > MAX_SLAB_SIZE {
        record_run_pages(size) * PAGE_SIZE
    } else {
        CLASS_SIZES[class_of(size)] as u64
    }
}

impl Walk<'_> {
    fn mark(&mut self, off: u64, size: u64) -> Result<()> {
        if self.live.insert(off, size).is_some() {
            return Err(corrupt(off, "record reachable twice"));
        }
        self.report.live_bytes += alloc_size(size);
        Ok(())
    }

    /// `path`: the hash fragments of the levels above, packed as in the hash.
    fn node(&mut self, off: u64, depth: u32, path: u64) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(corrupt(off, "trie deeper than its last level"));
        }
        let n = self.reader.node(Offset(off))?;
        let mut raw =
            self.reader.view.slice(off, n.size(), self.reader.limit).expect("validated").to_vec();
        raw[8..12].fill(0);
        if node_checksum(&raw) != n.checksum {
            return Err(corrupt(off, "node checksum mismatch"));
        }
        self.mark(off, n.size())?;
        self.report.nodes += 1;
        if n.kind == NODE_KIND_COLLISION {
            if depth != MAX_DEPTH {
                return Err(corrupt(off, "collision node above the last level"));
            }
            let mut keys = HashSet::new();
            for c in n.children {
                let key = self.leaf(c.get())?;
                if self.hasher.hash(&key) != path {
                    return Err(corrupt(c.get(), "leaf in a collision node of another hash"));
                }
                if !keys.insert(key) {
                    return Err(corrupt(c.get(), "duplicate key"));
                }
            }
            return Ok(());
        }
        if depth == MAX_DEPTH {
            return Err(corrupt(off, "branch node at the last level"));
        }
        if depth > 0 && n.nodemap == 0 && n.children.len() == 1 {
            return Err(corrupt(off, "non-canonical node holding a single leaf"));
        }
        let shift = BITS_PER_LEVEL * depth;
        let below = if shift == 0 { 0 } else { (1u64 << shift) - 1 };
        let mut i = 0;
        for bit in 0..32u64 {
            if n.datamap & (1 << bit) != 0 {
                let c = n.children[i].get();
                i += 1;
                let key = self.leaf(c)?;
                let h = self.hasher.hash(&key);
                if h & below != path || (h >> shift) & 31 != bit {
                    return Err(corrupt(c, "leaf on the wrong hash path"));
                }
            }
        }
        for bit in 0..32u64 {
            if n.nodemap & (1 << bit) != 0 {
                let c = n.children[i].get();
                i += 1;
                self.node(c, depth + 1, path | (bit << shift))?;
            }
        }
        Ok(())
    }

    fn leaf(&mut self, off: u64) -> Result<Vec<u8>> {
        let l = self.reader.leaf(Offset(off))?;
        if !l.intact() {
            return Err(corrupt(off, "leaf checksum mismatch"));
        }
        let key = l.key.to_vec();
        self.mark(off, l.size())?;
        self.report.leaves += 1;
        self.leaves += 1;
        let v = self.reader.value(&l)?;
        for p in v.parts {
            self.reader.part(p, usize::MAX)?;
            if p.rec.get() != 0 {
                self.mark(p.rec.get(), part_record_size(p.len.get()))?;
            }
            self.report.parts += 1;
        }
        if let Some(sub) = v.map {
            if self.depth >= MAX_NESTING {
                return Err(corrupt(off, "maps nested deeper than the limit"));
            }
            self.maps.push((sub, off, self.depth + 1));
        }
        Ok(key)
    }

    /// Walk one map: its tree, then count its leaves against its recorded entries.
    fn map(&mut self, map: MapRoot, at: u64, depth: usize) -> Result<()> {
        (self.leaves, self.depth) = (0, depth);
        if !map.is_empty() {
            self.node(map.root.0, 0, 0)?;
        }
        if self.leaves != map.entries {
            return Err(corrupt(at, "entry count differs from the leaves reachable"));
        }
        Ok(())
    }
}

/// Walk the commit `snap`, which the caller keeps pinned.
pub(crate) fn check(shared: &Arc<Shared>, snap: &Snapshot) -> Result<CheckReport> {
    let alloc = load_snapshot_alloc(shared, snap)?;
    let reader = Reader { view: alloc.view(), limit: alloc.end() };
    let mut w = Walk {
        reader,
        hasher: shared.hasher,
        live: HashMap::new(),
        maps: Vec::new(),
        leaves: 0,
        depth: 0,
        report: CheckReport::default(),
    };
    w.report.txn_id = snap.txn.0;
    w.report.entries = snap.map.entries;
    w.report.skipped_commits = shared.skipped(snap, &shared.trusted()?);
    w.map(snap.map, META_OFFSETS[snap.slot], 0)?;
    while let Some((map, at, depth)) = w.maps.pop() {
        w.report.maps += 1;
        w.map(map, at, depth)?;
    }
    let inv = alloc.inventory()?;
    let end = inv.end;

    let mut free: HashMap<u64, u64> = HashMap::new();
    for &(o, s) in &inv.free {
        if free.insert(o, s).is_some() {
            return Err(corrupt(o, "slot free twice"));
        }
        w.report.free_bytes += s;
    }
    let free_runs: HashMap<u64, u64> = inv.free_runs.iter().copied().collect();
    let mut pending_runs: HashMap<u64, u64> = HashMap::new();
    for &(o, p) in &inv.pending_runs {
        if pending_runs.insert(o, p).is_some() {
            return Err(corrupt(o, "run freed twice"));
        }
        w.report.free_bytes += p * PAGE_SIZE;
    }
    let mut meta_runs: HashMap<u64, u64> = HashMap::new();
    for &(o, p) in &inv.meta_runs {
        if meta_runs.insert(o, p).is_some() {
            return Err(corrupt(o, "metadata run listed twice"));
        }
        w.report.live_bytes += p * PAGE_SIZE;
    }

    let mut page = DATA_START;
    while page < end {
        w.report.runs += 1;
        if let Some(&pages) = free_runs.get(&page) {
            w.report.free_bytes += pages * PAGE_SIZE;
            page += pages * PAGE_SIZE;
            continue;
        }
        // A pending run's header may already be overwritten by a transaction that reused it
        // after this commit: its length comes from the pending entry, never from the file.
        if let Some(pages) = pending_runs.remove(&page) {
            page += pages * PAGE_SIZE;
            continue;
        }
        let h = alloc.run_header(page)?;
        let pages = h.pages.get() as u64;
        match h.kind.get() {
            RUN_SLAB => {
                let c = h.class.get() as usize;
                if c >= NUM_CLASSES || pages != span_pages(c) as u64 {
                    return Err(corrupt(page, "slab span header"));
                }
                let s = CLASS_SIZES[c] as u64;
                let carved = inv.cursors.get(&page).copied().unwrap_or(span_slots(c));
                for i in 0..span_slots(c) {
                    let off = page + RUN_HEADER_SIZE + i as u64 * s;
                    let live = w.live.remove(&off);
                    if let Some(size) = live
                        && (size > MAX_SLAB_SIZE || class_of(size) != c)
                    {
                        return Err(corrupt(off, "record in a slab of another class"));
                    }
                    let is_free = match free.remove(&off) {
                        Some(fs) if fs != s => {
                            return Err(corrupt(off, "free slot of another class"));
                        }
                        Some(_) => true,
                        None => false,
                    };
                    let unused = i >= carved;
                    match (live.is_some(), is_free, unused) {
                        (true, false, false) | (false, true, false) | (false, false, true) => {}
                        (false, false, false) => return Err(corrupt(off, "leaked slot")),
                        _ => return Err(corrupt(off, "slot both in use and free")),
                    }
                }
            }
            RUN_RECORD => {
                let off = page + RUN_HEADER_SIZE;
                match w.live.remove(&off) {
                    Some(size) if size > MAX_SLAB_SIZE && record_run_pages(size) == pages => {}
                    None => return Err(corrupt(page, "leaked record run")),
                    _ => return Err(corrupt(page, "record run mismatch")),
                }
            }
            RUN_META => match meta_runs.remove(&page) {
                Some(p) if p == pages => {}
                None => return Err(corrupt(page, "leaked metadata run")),
                _ => return Err(corrupt(page, "metadata run mismatch")),
            },
            _ => return Err(corrupt(page, "unknown run kind")),
        }
        page += pages * PAGE_SIZE;
    }
    if page != end {
        return Err(corrupt(page, "last run crosses the end"));
    }
    if let Some((&o, _)) = w.live.iter().next() {
        return Err(corrupt(o, "reachable record outside every span"));
    }
    if let Some((&o, _)) = free.iter().next() {
        return Err(corrupt(o, "free slot outside every span"));
    }
    if let Some((&o, _)) = meta_runs.iter().chain(pending_runs.iter()).next() {
        return Err(corrupt(o, "run listed by the allocator but not in the file"));
    }
    for &span in inv.cursors.keys() {
        let h = alloc.run_header(span)?;
        if h.kind.get() != RUN_SLAB {
            return Err(corrupt(span, "slab cursor on a run that is not a slab"));
        }
    }
    if w.report.live_bytes != inv.live_bytes || w.report.free_bytes != inv.free_bytes {
        return Err(corrupt(
            META_OFFSETS[snap.slot],
            "live or free byte counts differ from the walk",
        ));
    }
    Ok(w.report)
}
