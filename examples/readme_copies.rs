//! The README's example "copies", as it is there (tests/readme.rs keeps them equal; .ci/run
//! runs it twice, in a scratch directory).

fn main() -> pheap::Result<()> {
    let heap = pheap::Heap::open("data.pheap")?;
    let _ = std::fs::remove_file("backup.pheap"); // copy_to never overwrites: Error::Exists
    heap.copy_to("backup.pheap")?; // consistent copy of the latest commit, taken beside
    // readers and the writer; appears atomically; by pages (about a plain copy's speed), or
    // rebuilt with live data only when more than a quarter of the heap is free
    heap.copy_to_overwriting("b.pheap")?; // the same, replacing the destination
    heap.compact()?; // online: moves records out of the tail in bounded
    // steps, gives the tail back (readers keep snapshots)
    Ok(())
}
