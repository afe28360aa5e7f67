use pheap::prelude::*;
fn main() {
    let p = std::env::args().nth(1).unwrap();
    let t = std::time::Instant::now();
    let h = pheap::Heap::open(&p).unwrap();
    let t1 = t.elapsed();
    let rx = h.begin_read().unwrap();
    let v = rx.get(b"k1").unwrap().map(|v| v.len());
    let t2 = t.elapsed();
    eprintln!("open {t1:?} open+get {t2:?} {v:?}");
}
