use pheap::Heap;

#[test]
fn smoke() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.pheap");
    let heap = Heap::open(&path).unwrap();
    let mut tx = heap.begin_write().unwrap();
    for i in 0..10000u32 {
        tx.insert(&i.to_le_bytes(), format!("value {i}").as_bytes()).unwrap();
    }
    assert_eq!(tx.get(&5u32.to_le_bytes()).unwrap(), Some(&b"value 5"[..]));
    tx.commit().unwrap();
    heap.check().unwrap();
    let rx = heap.begin_read().unwrap();
    assert_eq!(rx.len(), 10000);
    for i in 0..10000u32 {
        assert_eq!(rx.get(&i.to_le_bytes()).unwrap().unwrap(), format!("value {i}").as_bytes());
    }
    assert_eq!(rx.iter().count(), 10000);
    drop(rx);
    let mut tx = heap.begin_write().unwrap();
    for i in 0..5000u32 {
        assert!(tx.remove(&i.to_le_bytes()).unwrap());
    }
    tx.commit().unwrap();
    println!("{:?}", heap.check().unwrap());
    drop(heap);
    let heap = Heap::open(&path).unwrap();
    let rx = heap.begin_read().unwrap();
    assert_eq!(rx.len(), 5000);
    assert_eq!(rx.get(&1u32.to_le_bytes()).unwrap(), None);
    assert_eq!(rx.get(&7000u32.to_le_bytes()).unwrap().unwrap(), b"value 7000");
    drop(rx);
    for round in 0..20u32 {
        let mut tx = heap.begin_write().unwrap();
        tx.insert(&round.to_le_bytes(), b"again").unwrap();
        tx.commit().unwrap();
        heap.check().unwrap();
    }
    println!("{:?}", heap.stats().unwrap());
}
