//! `Heap::copy_to`: a consistent copy of one commit, taken while the writer works; atomic
//! publication, even when the copying process is killed.

use pheap::prelude::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pheap::{Durability, Error, Heap};

mod common;
use common::{Model, contents};

/// Commit `i` sets `seq` to `i` and slot `i % 50` to a value made from `i`.
fn value(i: u64) -> Vec<u8> {
    let len = if i.is_multiple_of(13) { 70_000 } else { (i % 300) as usize };
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

fn commit(heap: &Heap, i: u64) {
    let mut tx = heap.begin_write().unwrap();
    tx.insert(format!("slot{}", i % 50).as_bytes(), value(i)).unwrap();
    tx.insert(b"seq", i.to_le_bytes()).unwrap();
    tx.set_durability(if i.is_multiple_of(5) { Durability::Immediate } else { Durability::None });
    tx.commit().unwrap();
}

/// The state after commit `s`.
fn state(s: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut m = BTreeMap::new();
    for i in 1..=s {
        m.insert(format!("slot{}", i % 50).into_bytes(), value(i));
    }
    m.insert(b"seq".to_vec(), s.to_le_bytes().to_vec());
    m
}

/// `filler` entries `fill{i}` -> a value of `i % 500` bytes (the bulk of a mostly live heap).
fn fill(heap: &Heap, filler: u64) -> Model {
    let mut tx = heap.begin_write().unwrap();
    let mut m = Model::new();
    for i in 0..filler {
        let (k, v) = (format!("fill{i}").into_bytes(), vec![i as u8; (i % 500) as usize]);
        tx.insert(&k, &v).unwrap();
        m.insert(k, v);
    }
    tx.commit().unwrap();
    m
}

#[test]
fn a_copy_taken_while_the_writer_commits_is_exactly_one_commit() {
    copies_while_the_writer_commits(0);
}

/// As above with most of the heap live: every copy is made by pages, while the writer reuses
/// the space the copied snapshot counts free.
#[test]
fn a_copy_by_pages_taken_while_the_writer_commits_is_exactly_one_commit() {
    let by_pages = copies_while_the_writer_commits(30_000);
    assert!(by_pages.iter().all(|&b| b), "{by_pages:?}");
}

/// Copies taken while a writer commits (after `filler` entries): each is exactly one commit.
/// Returns whether each was made by pages.
fn copies_while_the_writer_commits(filler: u64) -> Vec<bool> {
    let dir = tempfile::tempdir().unwrap();
    let heap = Heap::open(dir.path().join("src.pheap")).unwrap();
    let filled = fill(&heap, filler);
    commit(&heap, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (heap, stop) = (heap.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 1;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                commit(&heap, i);
            }
            i
        })
    };
    let (mut seen, mut by_pages) = (Vec::new(), Vec::new());
    for round in 0..8 {
        let dest = dir.path().join(format!("copy{round}.pheap"));
        let stats = heap.copy_to(&dest).unwrap();
        by_pages.push(stats.by_pages);
        let copy = Heap::open(&dest).unwrap();
        let mut got = contents(&copy);
        for (k, v) in &filled {
            assert_eq!(got.remove(k).as_ref(), Some(v), "round {round}: {k:?}");
        }
        let s = u64::from_le_bytes(got[&b"seq"[..]].clone().try_into().unwrap());
        assert_eq!(got, state(s), "round {round}: the copy is not the state of commit {s}");
        assert_eq!(stats.entries, (got.len() + filled.len()) as u64);
        assert_eq!(stats.file_size, std::fs::metadata(&dest).unwrap().len());
        copy.check().unwrap();
        // The copy takes commits of its own (the snapshot copied may have been a non-durable
        // one, its frees pending): reusing its free space, it stays sound.
        let mut tx = copy.begin_write().unwrap();
        for j in 0..300u64 {
            tx.insert(format!("slot{}", j % 50).as_bytes(), value(j + 7)).unwrap();
        }
        tx.commit().unwrap();
        copy.check().unwrap();
        seen.push(s);
    }
    stop.store(true, Ordering::Relaxed);
    let last = writer.join().unwrap();
    assert!(seen.windows(2).all(|w| w[0] <= w[1]) && *seen.last().unwrap() <= last);
    assert!(seen.first() < seen.last(), "the writer made no progress during the copies");
    heap.check().unwrap();
    by_pages
}

fn holds(path: &Path, needle: &[u8]) -> bool {
    std::fs::read(path).unwrap().windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_copy_by_pages_is_its_snapshot_writable_and_holds_no_freed_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.pheap");
    let heap = Heap::open(&src).unwrap();
    fill(&heap, 20_000);
    // A sub-map, a large record (a run of pages) and small ones.
    let mut tx = heap.begin_write().unwrap();
    {
        let mut sub = tx.map_mut(b"sub").unwrap();
        for i in 0..300u32 {
            sub.insert(i.to_be_bytes(), vec![7u8; i as usize]).unwrap();
        }
    }
    tx.insert(b"large", vec![3u8; 200_000]).unwrap();
    tx.commit().unwrap();
    // Bytes that were live, then freed (slots and a run): the source still holds them.
    let secret: Vec<u8> = b"SECRET-".iter().cycle().take(210).copied().collect();
    let mut tx = heap.begin_write().unwrap();
    tx.insert(b"small secret", &secret).unwrap();
    tx.insert(b"large secret", secret.repeat(500)).unwrap();
    tx.commit().unwrap();
    let mut tx = heap.begin_write().unwrap();
    tx.remove(b"small secret").unwrap();
    tx.remove(b"large secret").unwrap();
    tx.commit().unwrap();
    assert!(holds(&src, &secret), "the test needs freed bytes still in the source");

    let dest = dir.path().join("copy.pheap");
    let stats = heap.copy_to(&dest).unwrap();
    assert!(stats.by_pages, "a mostly live heap is copied by pages");
    assert!(!holds(&dest, &secret[..64]), "the copy holds bytes its snapshot freed");
    let copy = Heap::open(&dest).unwrap();
    assert_eq!(top(&copy), top(&heap));
    let sub = |h: &Heap| snapshot_of_sub(h);
    assert_eq!(sub(&copy), sub(&heap));
    let report = copy.check().unwrap();
    assert_eq!(report.entries, stats.entries);
    assert_eq!(stats.file_size, std::fs::metadata(&dest).unwrap().len());
    assert!(!copy.sealed());
    // Writable: the copy takes commits, reuses its free space and reopens whole.
    let mut tx = copy.begin_write().unwrap();
    for i in 0..2_000u64 {
        tx.insert(format!("new{i}").as_bytes(), vec![1u8; (i % 900) as usize]).unwrap();
    }
    tx.remove(b"fill7").unwrap();
    tx.commit().unwrap();
    let expected = top(&copy);
    drop(copy);
    let copy = Heap::open(&dest).unwrap();
    assert_eq!(top(&copy), expected);
    copy.check().unwrap();
    // A copy by pages of a sealed heap is a writable heap again.
    let sealed = dir.path().join("sealed.pheap");
    heap.seal_to(&sealed).unwrap();
    let again = dir.path().join("again.pheap");
    let stats = Heap::open(&sealed).unwrap().copy_to(&again).unwrap();
    assert!(stats.by_pages && stats.digest.is_none());
    let again = Heap::open(&again).unwrap();
    assert!(!again.sealed());
    assert_eq!(top(&again), top(&heap));
    let mut tx = again.begin_write().unwrap();
    tx.insert(b"k", b"v").unwrap();
    tx.commit().unwrap();
    again.check().unwrap();
}

/// The top-level entries but sub-maps.
fn top(heap: &Heap) -> Model {
    let rx = heap.begin_read().unwrap();
    let mut m = Model::new();
    for r in rx.iter() {
        let (k, v) = r.unwrap();
        if v.kind() != pheap::Kind::Map {
            m.insert(k.to_vec(), v.bytes().unwrap().to_vec());
        }
    }
    m
}

fn snapshot_of_sub(heap: &Heap) -> Model {
    let rx = heap.begin_read().unwrap();
    let sub = rx.as_map().unwrap().map(b"sub").unwrap().unwrap();
    sub.iter()
        .map(|r| r.and_then(|(k, v)| Ok((k.to_vec(), v.bytes()?.to_vec()))))
        .collect::<pheap::Result<_>>()
        .unwrap()
}

#[test]
fn a_copy_of_a_copy_is_identical_compact_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let heap = Heap::open(dir.path().join("a.pheap")).unwrap();
    for i in 1..=400 {
        commit(&heap, i);
    }
    // Remove most of it, so the source holds far more file than data.
    let mut tx = heap.begin_write().unwrap();
    for j in 0..45 {
        tx.remove(format!("slot{j}").as_bytes()).unwrap();
    }
    tx.commit().unwrap();
    let (b, c) = (dir.path().join("b.pheap"), dir.path().join("c.pheap"));
    assert!(!heap.copy_to(&b).unwrap().by_pages, "a mostly free heap is rebuilt");
    let hb = Heap::open(&b).unwrap();
    hb.copy_to(&c).unwrap();
    let hc = Heap::open(&c).unwrap();
    assert_eq!(contents(&heap), contents(&hb));
    assert_eq!(contents(&hb), contents(&hc));
    hc.check().unwrap();
    let (src, copy) = (heap.stats().unwrap(), hc.stats().unwrap());
    assert!(copy.file_size < src.file_size, "the copy holds only live data");
    assert!(
        copy.file_size <= copy.live_bytes * 11 / 10 + (1 << 20),
        "copy: {} bytes for {} live",
        copy.file_size,
        copy.live_bytes
    );
    // An existing destination is refused and left alone, unless overwriting is asked.
    let err = heap.copy_to(&c).unwrap_err();
    assert!(matches!(&err, Error::Exists { path } if *path == c), "{err}");
    assert_eq!(contents(&hc), contents(&heap));
    commit(&heap, 401);
    drop(hc);
    heap.copy_to_overwriting(&c).unwrap();
    assert_eq!(contents(&Heap::open(&c).unwrap()), contents(&heap));
    // Nothing but the heaps and their lock files is left in the directory.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["a.pheap", "a.pheap-lock", "b.pheap", "b.pheap-lock", "c.pheap", "c.pheap-lock"]
    );
}

const KILL_ENV: &str = "PHEAP_COPY_CHILD";

/// Child of `a_killed_copy_leaves_nothing_at_the_destination`: copy the heap to d0, d1, ...
#[test]
fn copy_child() {
    let Ok(src) = std::env::var(KILL_ENV) else { return };
    let heap = Heap::options().read_only(true).open(&src).unwrap();
    let dir = Path::new(&src).parent().unwrap();
    for i in 0.. {
        heap.copy_to(dir.join(format!("d{i}.pheap"))).unwrap();
        println!("done {i}");
    }
}

#[test]
fn a_killed_copy_leaves_nothing_at_the_destination() {
    if std::env::var(KILL_ENV).is_ok() {
        return;
    }
    let rounds: u64 =
        std::env::var("PHEAP_COPY_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.pheap");
    let heap = Heap::open(&src).unwrap();
    let mut tx = heap.begin_write().unwrap();
    for i in 0..60_000u64 {
        tx.insert(i.to_be_bytes(), vec![i as u8; (i % 200) as usize]).unwrap();
    }
    tx.commit().unwrap();
    let expected = contents(&heap);
    let mut seed = 0x5eed_u64;
    let (mut complete, mut absent) = (0, 0);
    for round in 0..rounds {
        let out = dir.path().join(format!("round{round}"));
        std::fs::create_dir(&out).unwrap();
        let src_link = out.join("src.pheap");
        std::fs::hard_link(&src, &src_link).unwrap_or_else(|_| panic!("link"));
        // (A hard link shares the heap but not the lock file: fine for a read-only copier while
        // this process does not write.)
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["copy_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(KILL_ENV, &src_link)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let done = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(|l| l.ok())
                .filter(|l| l.contains("done "))
                .count()
        });
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(seed % 400));
        child.kill().unwrap(); // SIGKILL

        child.wait().unwrap();
        let finished = done.join().unwrap();
        for i in 0..=finished {
            let d = out.join(format!("d{i}.pheap"));
            if !d.exists() {
                assert_eq!(i, finished, "round {round}: a finished copy is missing");
                absent += 1;
                continue;
            }
            // Present: complete, whether or not the child lived to say so.
            let copy = Heap::open(&d).unwrap();
            assert_eq!(contents(&copy), expected, "round {round}: copy {i} incomplete");
            copy.check().unwrap();
            complete += 1;
        }
        std::fs::remove_dir_all(&out).unwrap();
    }
    eprintln!("{rounds} kills: {complete} complete copies checked, {absent} interrupted");
    assert!(absent > 0, "no copy was interrupted");
}

#[test]
fn a_seal_by_pages_is_sealed_checked_and_the_same_for_the_same_commit() {
    let dir = tempfile::tempdir().unwrap();
    let heap = Heap::open(dir.path().join("src.pheap")).unwrap();
    let filled = fill(&heap, 10_000);
    let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    let sa = heap.seal_by_pages_to(&a).unwrap();
    let sb = heap.seal_by_pages_to(&b).unwrap();
    assert!(sa.by_pages && sa.digest.is_some());
    assert_eq!(sa.digest, sb.digest, "one commit, one digest");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let sealed = Heap::open(&a).unwrap();
    assert!(sealed.sealed() && sealed.digest() == sa.digest);
    assert_eq!(contents(&sealed), filled);
    sealed.check().unwrap();
    assert!(matches!(sealed.begin_write(), Err(Error::Sealed { .. })));
    // seal_to stays rebuilt: its digest depends on the content alone.
    let sc = heap.seal_to(&c).unwrap();
    assert!(!sc.by_pages && sc.digest != sa.digest);
    assert_eq!(contents(&Heap::open(&c).unwrap()), filled);
}

/// A copy by pages onto another file system (the kernel refuses to copy file to file across
/// them: EXDEV) copies through the mapping instead.
#[test]
fn a_copy_by_pages_onto_another_file_system() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let other = Path::new("/dev/shm");
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    if dev(other).is_none() || dev(other) == dev(dir.path()) {
        eprintln!("skipped: no second file system at /dev/shm");
        return;
    }
    let heap = Heap::open(dir.path().join("src.pheap")).unwrap();
    let filled = fill(&heap, 5_000);
    let far = tempfile::tempdir_in(other).unwrap();
    let stats = heap.copy_to(far.path().join("copy.pheap")).unwrap();
    assert!(stats.by_pages);
    let copy = Heap::open(far.path().join("copy.pheap")).unwrap();
    assert_eq!(contents(&copy), filled);
    copy.check().unwrap();
}
