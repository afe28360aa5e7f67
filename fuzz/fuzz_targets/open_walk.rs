//! Arbitrary bytes as a heap file: open, read everything, run the integrity walk, write.
//! Any outcome but a panic, a hang or an unbounded allocation is fine.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("f.pheap");
    std::fs::write(&path, data).expect("write input");
    let Ok(heap) = pheap::Heap::options().create(false).open(&path) else { return };
    if let Ok(rx) = heap.begin_read() {
        for item in rx.iter() {
            let Ok((k, _)) = item else { break };
            let _ = rx.get(k);
        }
        let _ = rx.get(b"absent");
    }
    let _ = heap.check();
    if let Ok(mut tx) = heap.begin_write() {
        let _ = tx.insert(b"key", b"value").and_then(|_| tx.remove(b"other"));
        let _ = tx.commit();
    }
});
