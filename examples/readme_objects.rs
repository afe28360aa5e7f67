//! The README's example "objects", as it is there (tests/readme.rs keeps them equal; .ci/run
//! runs it twice, in a scratch directory).

use pheap::prelude::*;
use pheap::typed::{MapDef, Record, Str};
use pheap::zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
use pheap::{Heap, Kind}; // re-exported: no dependency

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
#[zerocopy(crate = "pheap::zerocopy")]
#[repr(C)] // fixed layout, no padding (see pheap::typed)
struct Frob {
    foo: u64,
    bar: u64,
}
const FROBS: MapDef<Str, Record<Frob>> = MapDef::new("frobs"); // a typed map (codecs: str,
// integers, records, serde types)
fn main() -> pheap::Result<()> {
    let heap = Heap::open("objects.pheap")?;
    let mut tx = heap.begin_write()?;
    let mut users = tx.map_mut("users")?; // created if missing
    users.map_mut("alice")?.insert("theme", "dark")?; // maps nest; keys/values: AsRef<[u8]>
    tx.typed_mut(FROBS)?.insert("x", &Frob { foo: 9, bar: 23 })?;
    tx.insert_with("matrix", 8 << 20, |buf| buf.fill(0))?; // written in place, no copy
    tx.insert_parts("pickle", Kind::Tagged(1), b"header", &[&[0u8; 4096][..]])?;
    tx.commit()?;

    let rx = heap.begin_read()?;
    let users = rx.map("users")?.expect("exists"); // Map: the same reads (Readable)
    let frob = rx.typed(FROBS)?.expect("exists").get("x")?; // Option<&Frob>: a view of the file
    let m: &[f64] = rx.get_as("matrix")?.expect("exists"); // size and alignment checked
    let v = rx.get_value("pickle")?.expect("exists"); // kind, inline part, parts
    assert!(rx.get("users").is_err()); // WrongKind: a map is not bytes
    let shared = heap.begin_read_shared()?; // Clone + Send + Sync
    let alice = shared.map_owned(&["users", "alice"])?.expect("exists"); // an OwnedMap: the
    let owned = alice.get("theme")?; // same reads, values 'static
    for i in 0..4 {
        let _ = rx.iter_partition(i, 4);
    } // disjoint, together the map
    let _ = (users, frob, m, v, owned);
    Ok(())
}
