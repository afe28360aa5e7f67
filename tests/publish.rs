//! Publications (DESIGN §9): a sealed copy under its digest's name and `manifest.json` naming
//! it, written last; publishing unchanged content writes nothing.

use pheap::prelude::*;
use pheap::{Heap, publish};

fn source(dir: &tempfile::TempDir) -> Heap {
    let heap = Heap::open(dir.path().join("src.pheap")).unwrap();
    let mut tx = heap.begin_write().unwrap();
    for i in 0..3_000u32 {
        tx.insert(i.to_le_bytes(), vec![i as u8; (i % 200) as usize]).unwrap();
    }
    tx.map_mut("m").unwrap().insert("k", b"v").unwrap();
    tx.commit().unwrap();
    heap
}

fn manifest(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join(publish::MANIFEST_NAME)).unwrap()
}

#[test]
fn a_publication_is_its_sealed_file_and_a_manifest_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(&dir);
    let out = dir.path().join("pub/v1");
    let p = src.publish_to(&out).unwrap();
    assert!(p.file_written && p.manifest_written);
    assert_eq!(p.file, format!("{}.pheap", pheap::digest_hex(&p.digest)));
    assert_eq!(p.entries, 3_001);
    let data = out.join(&p.file);
    assert_eq!(std::fs::metadata(&data).unwrap().len(), p.size);
    let sealed = Heap::open(&data).unwrap();
    assert!(sealed.sealed());
    assert_eq!(sealed.digest(), Some(p.digest));
    sealed.check().unwrap();
    assert_eq!(sealed.begin_read().unwrap().len().unwrap(), 3_001);
    assert_eq!(manifest(&out), publish::manifest_json(&p.digest, p.size, p.entries, None));
    let text = manifest(&out);
    for field in [
        "\"format\": \"pheap-publication\"".to_string(),
        format!("\"version\": {}", publish::MANIFEST_VERSION),
        format!("\"file\": \"{}\"", p.file),
        format!("\"digest\": \"{}\"", pheap::digest_hex(&p.digest)),
        format!("\"size\": {}", p.size),
        "\"entries\": 3001".to_string(),
        format!("\"heap_format\": {}", pheap::FORMAT_VERSION),
        "\"pickles\": null".to_string(),
    ] {
        assert!(text.contains(&field), "{field} missing from {text}");
    }
    // Only the data file and the manifest: no temporary is left.
    let mut names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [p.file.clone(), "manifest.json".to_string()]);
}

#[test]
fn publishing_again_writes_nothing_and_new_content_replaces_the_manifest_last() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(&dir);
    let out = dir.path().join("v");
    let first = src.publish_to(&out).unwrap();
    let mtime = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let (m0, d0) = (mtime(&out.join("manifest.json")), mtime(&out.join(&first.file)));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = src.publish_to(&out).unwrap();
    assert_eq!((again.file_written, again.manifest_written), (false, false));
    assert_eq!(again.digest, first.digest);
    assert_eq!((mtime(&out.join("manifest.json")), mtime(&out.join(&first.file))), (m0, d0));

    let mut tx = src.begin_write().unwrap();
    tx.insert("new", b"entry").unwrap();
    tx.commit().unwrap();
    let second = src.publish_to(&out).unwrap();
    assert!(second.file_written && second.manifest_written);
    assert_ne!(second.digest, first.digest);
    assert!(manifest(&out).contains(&second.file));
    // The old version stays for readers that read the old manifest.
    assert!(Heap::open(out.join(&first.file)).unwrap().verify_digest().is_ok());
}

#[test]
fn a_damaged_file_under_the_digests_name_is_replaced_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(&dir);
    let out = dir.path().join("v");
    let p = src.publish_to(&out).unwrap();
    let data = out.join(&p.file);
    let mut bytes = std::fs::read(&data).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    std::fs::write(&data, &bytes).unwrap();
    assert!(matches!(
        Heap::open(&data).unwrap().verify_digest(),
        Err(pheap::Error::Corrupt { offset: 40, .. })
    ));
    let again = src.publish_to(&out).unwrap();
    assert!(again.file_written && !again.manifest_written);
    assert_eq!(Heap::open(&data).unwrap().verify_digest().unwrap(), p.digest);
}

#[test]
fn verify_digest_refuses_a_heap_that_is_not_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(&dir);
    assert!(matches!(src.verify_digest(), Err(pheap::Error::Refused { .. })));
}

#[test]
fn two_publishers_at_once_each_leave_a_whole_publication_and_the_manifest_names_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v");
    let heaps: Vec<Heap> = (0..2)
        .map(|i| {
            let heap = Heap::open(dir.path().join(format!("h{i}.pheap"))).unwrap();
            let mut tx = heap.begin_write().unwrap();
            for k in 0..2_000u32 {
                tx.insert(k.to_le_bytes(), vec![i as u8; 100]).unwrap();
            }
            tx.commit().unwrap();
            heap
        })
        .collect();
    let stats: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = heaps.iter().map(|h| s.spawn(|| h.publish_to(&out).unwrap())).collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_ne!(stats[0].digest, stats[1].digest);
    for p in &stats {
        assert_eq!(Heap::open(out.join(&p.file)).unwrap().verify_digest().unwrap(), p.digest);
    }
    let text = manifest(&out);
    let named: Vec<_> = stats.iter().filter(|p| text.contains(&p.file)).collect();
    assert_eq!(named.len(), 1, "{text}");
    assert_eq!(
        text,
        publish::manifest_json(&named[0].digest, named[0].size, named[0].entries, None)
    );
}
