//! The test kit: one model, one operation enum with one harness that runs it against a heap,
//! one simulated-disk opener, shared by the crate's tests and the fuzz targets (feature
//! `fuzzing`; not part of the API). Randomness in tests comes from `rand`'s `SmallRng`.

mod disk;
mod harness;
mod history;
mod ops;
pub mod targets;

use crate::Readable;
use std::collections::BTreeMap;

pub use disk::SimDisk;
pub use harness::Harness;
pub use history::History;
pub use ops::Op;

#[cfg(test)]
pub(crate) use disk::{CAP, boot_id, open_mem};
#[cfg(test)]
pub(crate) use ops::{file_ops, sim_ops};

use crate::{Heap, Kind, Map, ReadTxn, Result, WriteTxn};

/// What a map holds, as the tests model it.
pub type Model = BTreeMap<Vec<u8>, Val>;

/// A value, as the tests model it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Val {
    /// Bytes or a tagged value: the inline part and the out-of-line parts.
    Bytes {
        /// [`Kind::Bytes`] or [`Kind::Tagged`].
        kind: Kind,
        /// The inline part.
        inline: Vec<u8>,
        /// The out-of-line parts.
        parts: Vec<Vec<u8>>,
    },
    /// A sub-map.
    Map(Model),
}

impl Val {
    /// A value of `kind` as stored: one inline part of 4 KiB or more with no other part goes
    /// out of line.
    pub fn of(kind: Kind, inline: &[u8], parts: &[Vec<u8>]) -> Val {
        if parts.is_empty() && inline.len() >= crate::format::OUT_OF_LINE_MIN {
            return Val::Bytes { kind, inline: Vec::new(), parts: vec![inline.to_vec()] };
        }
        Val::Bytes { kind, inline: inline.to_vec(), parts: parts.to_vec() }
    }

    /// Plain bytes, as `insert` stores them.
    pub fn plain(v: &[u8]) -> Val {
        Val::of(Kind::Bytes, v, &[])
    }

    /// The one byte string `get` returns, if the value has that shape.
    pub fn single(&self) -> Option<&[u8]> {
        match self {
            Val::Bytes { inline, parts, .. } if parts.is_empty() => Some(inline),
            Val::Bytes { inline, parts, .. } if inline.is_empty() && parts.len() == 1 => {
                Some(&parts[0])
            }
            _ => None,
        }
    }
}

/// The model's map at `path`, levels created as `map_mut_path` creates them; `None` where a
/// level holds bytes (the heap then answers [`Error::WrongKind`]; the levels before stay).
pub fn model_map<'m>(m: &'m mut Model, path: &[Vec<u8>]) -> Option<&'m mut Model> {
    let mut cur = m;
    for k in path {
        match cur.entry(k.clone()).or_insert_with(|| Val::Map(Model::new())) {
            Val::Map(sub) => cur = sub,
            Val::Bytes { .. } => return None,
        }
    }
    Some(cur)
}

/// A flat model of plain values, as a nested one.
pub fn plain_model<'a>(entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Model {
    entries.into_iter().map(|(k, v)| (k.to_vec(), Val::plain(v))).collect()
}

/// Every entry of the latest commit, each also read back by key (so a lookup and the walk
/// must agree), and the recorded counts checked. Panics on any error.
pub fn contents(heap: &Heap) -> Model {
    let rx = heap.begin_read().expect("a read transaction");
    let m = snapshot(&rx).expect("the walk of the latest commit");
    lookups_agree(rx.as_map().expect("a usable snapshot"), &m);
    m
}

/// Every entry of `m` reads back by key in `map` as the walk found it.
fn lookups_agree(map: Map<'_>, m: &Model) {
    assert_eq!(m.len(), map.len().expect("len"), "entry count differs from the entries walked");
    for (k, v) in m {
        match v {
            Val::Map(sub) => lookups_agree(map.map(k).expect("map").expect("present"), sub),
            v => {
                let got = map.get(k);
                match v.single() {
                    Some(b) => assert_eq!(got.expect("get"), Some(b), "get and the walk disagree"),
                    None => assert!(got.is_err(), "get of a multi-part value must fail"),
                }
            }
        }
    }
}

/// Every entry of a map, sub-maps and parts included.
pub fn read_map(map: Map<'_>) -> Result<Model> {
    let mut out = Model::new();
    for item in map.iter() {
        let (k, v) = item?;
        let val = match v.kind() {
            Kind::Map => {
                // The walk checks each leaf's hash path, so a lookup finds what it yields
                // (DESIGN §2.6.3): a map it yields that `map` misses is a bug.
                let sub = map.map(k)?.expect("the walk yields a map that lookups do not find");
                assert_eq!(v.map_len(), Some(sub.len()?));
                Val::Map(read_map(sub)?)
            }
            kind => Val::Bytes {
                kind,
                inline: v.inline().to_vec(),
                parts: v.parts().map(|p| p.map(<[u8]>::to_vec)).collect::<Result<_>>()?,
            },
        };
        out.insert(k.to_vec(), val);
    }
    Ok(out)
}

/// Every entry of a read transaction's snapshot.
pub fn snapshot(rx: &ReadTxn) -> Result<Model> {
    read_map(rx.as_map()?)
}

/// Every entry as a write transaction sees it. Panics on any error.
pub fn txn_contents(tx: &WriteTxn) -> Model {
    let root = tx.as_map().expect("a usable transaction");
    let m = read_map(root).expect("the walk of a write transaction");
    lookups_agree(root, &m);
    m
}
