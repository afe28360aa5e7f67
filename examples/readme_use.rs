//! The README's example "use", as it is there (tests/readme.rs keeps them equal; .ci/run
//! runs it twice, in a scratch directory).

use pheap::prelude::*; // the traits of reads (Readable), writes (Writable)

fn main() -> pheap::Result<()> {
    let heap = pheap::Heap::open("data.pheap")?; // creates the file if missing
    let mut tx = heap.begin_write()?; // one writer at a time (try_begin_write: no wait)
    tx.insert(b"key", b"value")?;
    tx.remove(b"other")?; // -> bool: was it there
    tx.commit()?; // durable by default; drop or abort() discards
    let rx = heap.begin_read()?; // a snapshot; Send + Sync; never blocked
    let v: Option<&[u8]> = rx.get(b"key")?; // zero-copy, straight from the map
    assert_eq!(v, Some(&b"value"[..]));
    for item in rx.iter() {
        let (k, v) = item?; // every entry, in hash order, streamed
        println!("{k:?} = {v:?}");
    }
    heap.checkpoint()?; // make earlier fast commits durable
    Ok(())
}
