//! Values: decoding a leaf's value region (inline bytes, a sub-map, or a part table), writing
//! out-of-line parts, and freeing what a value owns (its parts; a sub-map's whole tree).

use zerocopy::{FromBytes, IntoBytes};

use super::read::LeafRef;
use super::{MapRoot, Reader, TrieWriter};
use crate::error::{Error, Result, corrupt};
use crate::format::*;

/// A decoded value: its kind, its inline part and its out-of-line parts, each part's range
/// checked against the snapshot's bounds (DESIGN §2.8, I15).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ValueRef<'a> {
    pub kind: Kind,
    pub inline: &'a [u8],
    pub parts: &'a [PartRef],
    /// The sub-map, for [`Kind::Map`].
    pub map: Option<MapRoot>,
}

impl<'a> Reader<'a> {
    /// Decode the value of leaf `l` (whose header [`Reader::leaf`] validated).
    pub(crate) fn value(&self, l: &LeafRef<'a>) -> Result<ValueRef<'a>> {
        let kind = l.kind();
        if let Some(map) = l.map_root() {
            return Ok(ValueRef { kind, inline: &[], parts: &[], map: Some(map) });
        }
        if l.flags & LEAF_FLAG_PARTS == 0 {
            return Ok(ValueRef { kind, inline: l.value, parts: &[], map: None });
        }
        let bad = || corrupt(l.off.0, "invalid part table");
        let (head, rest) = PartsHeader::read_from_prefix(l.value).map_err(|_| bad())?;
        let (count, inline_len) = (head.count.get() as u64, head.inline_len.get() as u64);
        if count == 0
            || count > MAX_PARTS as u64
            || rest.len() as u64 != count * PART_REF_SIZE + inline_len
        {
            return Err(bad());
        }
        let (table, inline) = rest.split_at((count * PART_REF_SIZE) as usize);
        let parts = <[PartRef]>::ref_from_bytes(table).map_err(|_| bad())?;
        for p in parts {
            self.part_range(p).ok_or_else(bad)?;
        }
        Ok(ValueRef { kind, inline, parts, map: None })
    }

    /// Where a part's data lies, if its record lies inside the snapshot.
    pub(super) fn part_range(&self, p: &PartRef) -> Option<(u64, u64)> {
        let (rec, len) = (p.rec.get(), p.len.get());
        if rec == 0 {
            return (len == 0).then_some((0, 0));
        }
        let ok = rec >= DATA_START
            && rec.is_multiple_of(8)
            && len <= MAX_VALUE_LEN as u64
            && rec.checked_add(part_record_size(len))? <= self.limit;
        ok.then(|| (part_data_at(rec), len))
    }

    /// A part's data, checked against its checksum when at most `verify` bytes long.
    pub(crate) fn part(&self, p: &PartRef, verify: usize) -> Result<&'a [u8]> {
        let (off, len) = self.part_range(p).ok_or_else(|| corrupt(p.rec.get(), "part range"))?;
        if len == 0 {
            return Ok(&[]);
        }
        let data =
            self.view.slice(off, len, self.limit).ok_or_else(|| corrupt(off, "part range"))?;
        // Read whole, so asked for whole: one request instead of a fault per page (§4.6a).
        self.view.will_read(off, len);
        if len <= verify as u64 && checksum64(data) != p.checksum.get() {
            return Err(corrupt(off, "part checksum mismatch"));
        }
        Ok(data)
    }
}

/// A value about to be written into a leaf.
#[derive(Clone, Copy, Debug)]
pub(crate) enum NewValue<'v> {
    /// `kind`'s bytes, inline (shorter than [`OUT_OF_LINE_MIN`] unless the caller chose).
    Inline { kind: Kind, bytes: &'v [u8] },
    /// An inline part and out-of-line parts already written.
    Parts { kind: Kind, inline: &'v [u8], parts: &'v [PartRef] },
    /// A sub-map.
    Map(MapRoot),
}

impl NewValue<'_> {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            NewValue::Inline { kind, .. } | NewValue::Parts { kind, .. } => *kind,
            NewValue::Map(_) => Kind::Map,
        }
    }
}

/// The flags and value region of a leaf holding `v` (`buf` holds a built region).
pub(super) fn encode_value<'b>(v: &NewValue<'b>, buf: &'b mut Vec<u8>) -> (u16, &'b [u8]) {
    match *v {
        NewValue::Inline { bytes, .. } => (0, bytes),
        NewValue::Map(m) => {
            let mv = MapValue { root: m.root.0.into(), entries: m.entries.into() };
            buf.clear();
            buf.extend_from_slice(mv.as_bytes());
            (0, &buf[..])
        }
        NewValue::Parts { inline, parts, .. } => {
            let head = PartsHeader {
                count: (parts.len() as u32).into(),
                inline_len: (inline.len() as u32).into(),
            };
            buf.clear();
            buf.extend_from_slice(head.as_bytes());
            buf.extend_from_slice(parts.as_bytes());
            buf.extend_from_slice(inline);
            (LEAF_FLAG_PARTS, &buf[..])
        }
    }
}

impl TrieWriter<'_> {
    /// Write one out-of-line part: a record of [`part_record_size`] bytes, the data at its first
    /// 64-byte boundary, filled by `fill` straight in the file (no intermediate copy).
    pub(crate) fn write_part_with(
        &mut self,
        len: u64,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<PartRef> {
        if len > MAX_VALUE_LEN as u64 {
            return Err(Error::ValueTooLarge { len: len as usize, max: MAX_VALUE_LEN });
        }
        if len == 0 {
            let mut empty = [];
            fill(&mut empty);
            return Ok(PartRef { rec: 0.into(), len: 0.into(), checksum: checksum64(&[]).into() });
        }
        let rec = self.alloc.alloc(part_record_size(len))?;
        let data = part_data_at(rec.0);
        let written = self.alloc.write_with(Offset(data), len, fill);
        if let Err(e) = written {
            self.alloc.free(rec, part_record_size(len));
            return Err(e);
        }
        let sum = checksum64(self.alloc.read(Offset(data), len)?);
        Ok(PartRef { rec: rec.0.into(), len: len.into(), checksum: sum.into() })
    }

    /// Write one part from a slice: through `Storage::write` (long parts go through write(2),
    /// §1), its checksum taken from the slice rather than read back.
    fn write_part(&mut self, p: &[u8]) -> Result<PartRef> {
        if p.len() > MAX_VALUE_LEN {
            return Err(Error::ValueTooLarge { len: p.len(), max: MAX_VALUE_LEN });
        }
        if p.is_empty() {
            return Ok(PartRef { rec: 0.into(), len: 0.into(), checksum: checksum64(&[]).into() });
        }
        let len = p.len() as u64;
        let rec = self.alloc.alloc(part_record_size(len))?;
        if let Err(e) = self.alloc.write(Offset(part_data_at(rec.0)), p) {
            self.alloc.free(rec, part_record_size(len));
            return Err(e);
        }
        Ok(PartRef { rec: rec.0.into(), len: len.into(), checksum: checksum64(p).into() })
    }

    /// Write the parts of a value.
    pub(crate) fn write_parts(&mut self, parts: &[&[u8]]) -> Result<Vec<PartRef>> {
        if parts.len() > MAX_PARTS {
            return Err(Error::ValueTooLarge { len: parts.len(), max: MAX_PARTS });
        }
        let mut out = Vec::with_capacity(parts.len());
        for p in parts {
            match self.write_part(p) {
                Ok(r) => out.push(r),
                Err(e) => {
                    self.free_parts_of(&out);
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// Free the records of `parts`.
    pub(crate) fn free_parts_of(&mut self, parts: &[PartRef]) {
        for p in parts {
            if p.rec.get() != 0 {
                self.alloc.free(Offset(p.rec.get()), part_record_size(p.len.get()));
            }
        }
    }

    /// Free the leaf at `off` (being replaced or removed) and the parts it owns; returns its
    /// sub-map, whose tree is the caller's to free or keep.
    pub(super) fn free_leaf(&mut self, off: Offset) -> Result<Option<MapRoot>> {
        let r = self.reader();
        let l = r.leaf(off)?;
        let (size, map) = (l.size(), l.map_root());
        let parts =
            if l.flags & LEAF_FLAG_PARTS != 0 { r.value(&l)?.parts.to_vec() } else { Vec::new() };
        self.free_parts_of(&parts);
        self.alloc.free(off, size);
        Ok(map)
    }

    /// Free every record of the map `map`: its nodes, its leaves, their parts, and the maps
    /// below, with explicit stacks (no recursion, however deep the nesting). Memory beyond the
    /// freed records' list is the stacks'. A forged file whose maps cycle is stopped by a bound
    /// on the records visited (no more than the commit's space can hold: every record is at
    /// least 16 bytes), and one whose maps share a subtree frees records twice, which the
    /// commit refuses (I16): never a hang or a double free.
    pub(crate) fn free_map(&mut self, map: MapRoot) -> Result<()> {
        let mut budget = (self.alloc.end() - DATA_START) / 16;
        let mut stack = vec![map];
        while let Some(m) = stack.pop() {
            if m.is_empty() {
                continue;
            }
            let mut nodes = vec![m.root];
            while let Some(off) = nodes.pop() {
                let n = self.reader().node(off)?;
                let (size, leaves) = (n.size(), n.leaf_count());
                let children: Vec<u64> = n.children.iter().map(|c| c.get()).collect();
                budget = budget
                    .checked_sub(1 + children.len() as u64)
                    .ok_or_else(|| corrupt(off.0, "maps reach more records than the file holds"))?;
                for (i, c) in children.into_iter().enumerate() {
                    if i < leaves {
                        if let Some(sub) = self.free_leaf(Offset(c))? {
                            stack.push(sub);
                        }
                    } else {
                        nodes.push(Offset(c));
                    }
                }
                self.alloc.free(off, size);
            }
        }
        Ok(())
    }

    /// Rewrite the map leaf at `off` of `key` in place (the running transaction allocated it, so
    /// no snapshot sees it): same key, same size, new root and count.
    pub(crate) fn update_map_leaf(&mut self, off: Offset, key: &[u8], map: MapRoot) -> Result<()> {
        debug_assert!(self.alloc.is_fresh(off));
        let mv = MapValue { root: map.root.0.into(), entries: map.entries.into() };
        let header = LeafHeader::new(LEAF_KIND_MAP, 0, key, mv.as_bytes());
        self.alloc.write(off, header.as_bytes())?;
        let at = off.add(LEAF_HEADER_SIZE + round8(key.len() as u64));
        self.alloc.write(at, mv.as_bytes())
    }
}
