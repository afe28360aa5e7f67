//! Build a heap from the input's first part (operations), corrupt it with the input's second
//! part (offset/xor edits), reopen, and read, walk and write. Any outcome but a panic, a hang or
//! an unbounded allocation is fine; a heap that was not corrupted must hold exactly the model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pheap::testkit::{Model, Val, snapshot};

fuzz_target!(|data: &[u8]| {
    let (ops, edits) =
        data.split_at(data.len().min(data.first().copied().unwrap_or(0) as usize * 4));
    let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).expect("temp dir");
    let path = dir.path().join("c.pheap");
    let mut model = Model::new();
    {
        let heap =
            pheap::Heap::options().durability(pheap::Durability::None).open(&path).expect("create");
        let mut tx = heap.begin_write().expect("writer");
        for op in ops.chunks(4) {
            let k = vec![op[0] % 64];
            match op.get(1).copied().unwrap_or(0) % 8 {
                0 => {
                    tx.remove(&k).expect("remove");
                    model.remove(&k);
                }
                7 => {
                    tx.commit().expect("commit");
                    tx = heap.begin_write().expect("writer");
                }
                6 => {
                    // A value of two parts, tagged, in a sub-map (keys 200.. are maps only).
                    let m = vec![200 + op[0] % 4];
                    let fill = op.get(3).copied().unwrap_or(0);
                    let (inline, part) = (vec![fill; 40], vec![fill ^ 1; op.get(2).copied().unwrap_or(0) as usize * 60]);
                    let kind = pheap::Kind::Tagged(fill);
                    tx.map_mut(&m)
                        .and_then(|mut sub| sub.insert_parts(&k, kind, &inline, &[&part]))
                        .expect("insert in a sub-map");
                    let Val::Map(sub) = model.entry(m).or_insert_with(|| Val::Map(Model::new())) else {
                        unreachable!("keys 200.. hold maps")
                    };
                    sub.insert(k, Val::of(kind, &inline, &[part]));
                }
                n => {
                    let len = op.get(2).copied().unwrap_or(0) as usize * n as usize * 40;
                    let v = vec![op.get(3).copied().unwrap_or(0); len];
                    tx.insert(&k, &v).expect("insert");
                    model.insert(k, Val::plain(&v));
                }
            }
        }
        tx.commit().expect("commit");
        heap.checkpoint().expect("checkpoint");
    }
    let mut bytes = std::fs::read(&path).expect("read");
    let pristine = edits.len() < 5;
    for e in edits.chunks(5) {
        if e.len() < 5 || bytes.is_empty() {
            break;
        }
        let at = u32::from_le_bytes([e[0], e[1], e[2], e[3]]) as usize % bytes.len();
        bytes[at] ^= e[4] | 1;
    }
    std::fs::write(&path, &bytes).expect("write");
    let Ok(heap) = pheap::Heap::options().create(false).open(&path) else {
        assert!(!pristine, "an intact heap failed to open");
        return;
    };
    if let Ok(rx) = heap.begin_read() {
        let got = snapshot(&rx);
        if pristine {
            assert_eq!(got.expect("an intact heap reads"), model, "contents differ from the model");
        }
        for k in 0..64u8 {
            let _ = rx.get(&[k]);
        }
        for m in 200..204u8 {
            if let Ok(Some(sub)) = rx.map(&[m]) {
                for k in 0..64u8 {
                    if let Ok(Some(v)) = sub.get_value(&[k]) {
                        let _ = v.parts().count();
                    }
                }
            }
        }
    }
    let sound = heap.check().is_ok();
    assert!(sound || !pristine, "an intact heap failed its integrity walk");
    if let Ok(mut tx) = heap.begin_write() {
        let _ = tx.insert(b"after", &[7; 300]).and_then(|_| tx.remove(&[1]).map(|_| ()));
        // Removing a (possibly damaged) sub-map frees its whole tree: an error, never a
        // double free or a hang.
        let _ = tx.remove(&[200]).and_then(|_| tx.remove(&[201]));
        let _ = tx.commit();
    }
    let _ = heap.check();
});
