use pheap::{Durability, Heap};
fn main() -> pheap::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let _ = std::fs::remove_file("/tmp/churn.pheap");
    let heap = Heap::open("/tmp/churn.pheap")?;
    let n = 100_000u64;
    let mut tx = heap.begin_write()?;
    for i in 0..n {
        tx.insert(&i.to_le_bytes(), &[1u8; 150])?;
    }
    tx.commit()?;
    let mut x = 1u64;
    for round in 0..200 {
        let mut tx = heap.begin_write()?;
        let batch = if mode == "single" { 1 } else { 1000 };
        for _ in 0..batch {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            tx.insert(&((x >> 20) % n).to_le_bytes(), &[round as u8; 150])?;
        }
        if mode == "nosync" {
            tx.set_durability(Durability::None);
        }
        tx.commit()?;
        if round % 20 == 0 {
            let s = heap.stats()?;
            println!(
                "{round}: file {:.1} MiB used {:.1} live {:.1} free {:.1}",
                s.file_size as f64 / 1048576.0,
                s.used_size as f64 / 1048576.0,
                s.live_bytes as f64 / 1048576.0,
                s.free_bytes as f64 / 1048576.0
            );
        }
    }
    heap.check()?;
    Ok(())
}
