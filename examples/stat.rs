//! Print a heap's stats and run the integrity walk: `cargo run --release --example stat PATH`
fn main() -> pheap::Result<()> {
    let path = std::env::args().nth(1).expect("PATH");
    let heap = pheap::Heap::options().read_only(true).open(&path)?;
    println!("{:?}", heap.stats()?);
    let t = std::time::Instant::now();
    println!("{:?} in {:.2} s", heap.check()?, t.elapsed().as_secs_f64());
    Ok(())
}
