//! Cold reads (DESIGN §4.6a), observed with `mincore` after the file's pages were evicted and
//! with the advice flags `/proc/self/smaps` shows: `Heap::prefetch` brings a cold heap into the
//! page cache, safe beside a writer and inside a small memory limit; a part handed out is asked
//! for whole (a short one exactly, a long one through the kernel's readahead); a small value
//! pulls no megabytes; a process that has done many lookups warms a heap that fits in memory up.

#![allow(unsafe_code)] // posix_fadvise, mmap and mincore: to evict the page cache and observe it

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use pheap::Heap;
use pheap::prelude::*;

/// Drop the file's clean pages from the page cache.
fn evict(path: &Path) {
    let f = File::open(path).unwrap();
    // SAFETY: a plain syscall on an open descriptor; no memory is passed.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
}

/// The fraction of the pages of `bytes` (a slice of a heap's mapping) in the page cache, found
/// without reading them.
fn resident_slice(bytes: &[u8]) -> f64 {
    let start = bytes.as_ptr() as usize & !4095;
    mincore_fraction(start as *mut libc::c_void, bytes.as_ptr() as usize + bytes.len() - start)
}

/// The fraction of the pages of `[addr, addr + len)` (page-aligned `addr`, inside a live
/// mapping) in the page cache.
fn mincore_fraction(addr: *mut libc::c_void, len: usize) -> f64 {
    let mut vec = vec![0u8; len.div_ceil(4096)];
    // SAFETY: the caller's range lies in a live mapping; mincore only writes one byte per page
    // into `vec`, which is long enough.
    let rc = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
    assert_eq!(rc, 0);
    vec.iter().filter(|&&b| b & 1 == 1).count() as f64 / vec.len() as f64
}

/// The advice flags (`rr` random, `sr` sequential; neither: normal) of the mapping holding
/// `addr`, from `/proc/self/smaps`.
fn advice_at(addr: *const u8) -> &'static str {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let addr = addr as usize;
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ')
            && let Some((a, b)) = range.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            inside = (a..b).contains(&addr);
        } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
            let flags: Vec<&str> = flags.split_whitespace().collect();
            return if flags.contains(&"rr") {
                "random"
            } else if flags.contains(&"sr") {
                "sequential"
            } else {
                "normal"
            };
        }
    }
    panic!("no mapping holds {addr:#x}");
}

/// A heap on the project's disk (not a tmpfs, whose pages cannot be evicted) holding `entries`,
/// its pages evicted; `None` where the page cache kept them (nothing could be shown).
fn cold_heap(
    dir: &tempfile::TempDir,
    entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
) -> Option<Heap> {
    let path = dir.path().join("cold.pheap");
    let heap = Heap::open(&path).unwrap();
    let mut tx = heap.begin_write().unwrap();
    for (k, v) in entries {
        tx.insert(k, v).unwrap();
    }
    tx.commit().unwrap();
    heap.checkpoint().unwrap();
    let used = heap.stats().unwrap().used_size;
    drop(heap);
    evict(&path);
    let left = resident(&path, used);
    if left > 0.2 {
        eprintln!("the page cache kept {left:.2} of the file after eviction: nothing to show");
        return None;
    }
    Some(Heap::open(&path).unwrap())
}

/// Wait (up to 5 s) until `f` holds: the kernel's reads are asynchronous.
fn eventually(f: impl FnMut() -> bool) -> bool {
    eventually_within(5, f)
}

/// Wait up to `secs` seconds until `f` holds.
fn eventually_within(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..secs * 100 {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// The fraction of the first `len` bytes of the file that are in the page cache.
fn resident(path: &Path, len: u64) -> f64 {
    with_mapping(path, len, |addr| mincore_fraction(addr, len as usize))
}

/// `f` of a fresh read-only shared mapping of the first `len` bytes of the file, unmapped after.
fn with_mapping<T>(path: &Path, len: u64, f: impl FnOnce(*mut libc::c_void) -> T) -> T {
    let file = File::open(path).unwrap();
    // SAFETY: a fresh read-only shared mapping of `len` bytes of an open file, checked for
    // failure, used by `f` only inside its length, and unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED);
    let out = f(addr);
    // SAFETY: unmaps exactly the mapping made above.
    unsafe { libc::munmap(addr, len as usize) };
    out
}

#[test]
fn prefetch_brings_a_cold_heap_into_the_page_cache() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let entries = (0..48u32).map(|i| (i.to_le_bytes().to_vec(), vec![i as u8; 1 << 20]));
    let Some(heap) = cold_heap(&dir, entries) else { return };
    let path = dir.path().join("cold.pheap");
    let used = heap.stats().unwrap().used_size;
    let before = resident(&path, used);
    let (mut calls, mut last) = (0, 0);
    let n = heap
        .prefetch_with(|done, total| {
            assert!(done > last && done <= total);
            (calls, last) = (calls + 1, done);
        })
        .unwrap();
    assert_eq!(n, used);
    assert_eq!(last, used);
    assert!(calls >= 6, "48 MiB in 8 MiB requests: {calls} progress calls");
    let after = resident(&path, used);
    assert!(after > 0.95, "resident after prefetch: {after:.2} (before: {before:.2})");
}

#[test]
fn prefetch_beside_a_writer_is_safe() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("busy.pheap");
    let heap = Heap::open(&path).unwrap();
    let writer = {
        let heap = Heap::open(&path).unwrap(); // a second handle, as another process has
        std::thread::spawn(move || {
            for round in 0..40u32 {
                let mut tx = heap.begin_write().unwrap();
                tx.clear().unwrap(); // the file grows and is given back under the prefetch
                for i in 0..64u32 {
                    tx.insert(i.to_le_bytes(), vec![round as u8; 64 << 10]).unwrap();
                }
                tx.commit().unwrap();
            }
        })
    };
    while !writer.is_finished() {
        heap.prefetch().unwrap();
    }
    writer.join().unwrap();
    assert_eq!(heap.begin_read().unwrap().len().unwrap(), 64);
    heap.check().unwrap();
}

#[test]
fn prefetch_and_advised_reads_beside_a_writer_process_are_safe() {
    // The writer: another process (this test binary again), growing the file and giving its
    // tail back while the parent prefetches and reads parts it advises.
    if let Ok(path) = std::env::var("PHEAP_TEST_WRITER") {
        let heap = Heap::open(path).unwrap();
        for round in 1..=40u32 {
            let mut tx = heap.begin_write().unwrap();
            tx.clear().unwrap();
            for i in 0..32u32 {
                let len = if i % 2 == 0 { 64 << 10 } else { 3 << 20 }; // advised either way
                tx.insert(i.to_le_bytes(), vec![round as u8; len]).unwrap();
            }
            tx.commit().unwrap();
        }
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("busy.pheap");
    let heap = Heap::open(&path).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "prefetch_and_advised_reads_beside_a_writer_process_are_safe"])
        .env("PHEAP_TEST_WRITER", &path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let done = child.try_wait().unwrap();
        heap.prefetch().unwrap();
        let rx = heap.begin_read().unwrap();
        rx.prefetch().unwrap();
        // One snapshot: every value of one round, whole.
        let round = rx.get(0u32.to_le_bytes()).unwrap().map(|v| v[0]);
        for i in 0..32u32 {
            let v = rx.get(i.to_le_bytes()).unwrap();
            assert_eq!(v.map(|v| v.iter().all(|&b| Some(b) == round)), round.map(|_| true));
        }
        seen.insert(round);
        if let Some(status) = done {
            assert!(status.success(), "the writer process: {status}");
            break;
        }
    }
    assert!(seen.len() > 2, "rounds seen: {seen:?}");
    assert_eq!(heap.begin_read().unwrap().get(5u32.to_le_bytes()).unwrap().unwrap()[0], 40);
    heap.check().unwrap();
}

#[test]
fn a_short_part_is_asked_for_whole_and_a_small_value_pulls_no_megabytes() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // 64 values of 1 MiB (each one request), and small ones between them.
    let entries = (0..64u32).flat_map(|i| {
        [
            (format!("big{i}").into_bytes(), vec![i as u8; 1 << 20]),
            (format!("small{i}").into_bytes(), vec![i as u8; 100]),
        ]
    });
    let Some(heap) = cold_heap(&dir, entries) else { return };
    let rx = heap.begin_read().unwrap();
    assert_eq!(rx.get(b"small7").unwrap().unwrap(), &[7u8; 100][..]);
    let big = rx.get(b"big9").unwrap().unwrap();
    // Not a byte of the part read yet: the request made when it was handed out brings it in.
    assert!(eventually(|| resident_slice(big) > 0.99), "part resident: {:.2}", resident_slice(big));
    // Few lookups: the mapping stays random, and nothing around them was read.
    assert_eq!(advice_at(big.as_ptr()), "random");
    // One part of 1 MiB, the header and the pages the two lookups touched: a few percent of
    // the 65 MiB file.
    let file = dir.path().join("cold.pheap");
    let all = resident(&file, heap.stats().unwrap().used_size);
    assert!(all < 0.05, "file resident: {all:.3}");
    assert_eq!(big, &vec![9u8; 1 << 20][..]);
}

#[test]
fn a_long_part_is_read_through_the_kernels_readahead() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let entries = [(b"array".to_vec(), vec![7u8; 64 << 20]), (b"x".to_vec(), vec![1u8; 10])];
    let Some(heap) = cold_heap(&dir, entries) else { return };
    let rx = heap.begin_read().unwrap();
    let part = rx.get(b"array").unwrap().unwrap();
    // Its pages read around their faults; the rest of the mapping stays random.
    assert_eq!(advice_at(part[part.len() / 2..].as_ptr()), "normal");
    let x = rx.get(b"x").unwrap().unwrap();
    assert_eq!(advice_at(x.as_ptr()), "random");
    // One byte read: the kernel reads ahead of it (a random mapping would read its page alone).
    assert_eq!(std::hint::black_box(part[0]), 7);
    let head = &part[..4 << 20];
    assert!(
        eventually(|| resident_slice(head) > 0.2),
        "resident after one byte: {:.3}",
        resident_slice(head)
    );
    assert!(part.iter().all(|&b| b == 7));
}

#[test]
fn many_lookups_warm_up_a_heap_that_fits_in_memory() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let entries = (0..20_000u32).map(|i| (i.to_le_bytes().to_vec(), vec![i as u8; 200]));
    let Some(heap) = cold_heap(&dir, entries) else { return };
    let file = dir.path().join("cold.pheap");
    let used = heap.stats().unwrap().used_size;
    let rx = heap.begin_read().unwrap();
    // A few lookups read what they touch, and nothing around it.
    for i in 0..10u32 {
        assert_eq!(rx.get(i.to_le_bytes()).unwrap().unwrap(), &vec![i as u8; 200][..]);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let few = resident(&file, used);
    assert!(few < 0.2, "resident after 10 lookups: {few:.3}");
    assert_eq!(advice_at(rx.get(0u32.to_le_bytes()).unwrap().unwrap().as_ptr()), "random");
    // Many: the whole heap comes in, while the mapping stays random.
    for i in 0..200u32 {
        assert_eq!(rx.get(i.to_le_bytes()).unwrap().unwrap(), &vec![i as u8; 200][..]);
    }
    // At idle I/O priority: other tests' I/O goes first.
    let warm = || resident(&file, used);
    assert!(eventually_within(60, || warm() > 0.95), "resident: {:.3}", warm());
    assert_eq!(advice_at(rx.get(0u32.to_le_bytes()).unwrap().unwrap().as_ptr()), "random");
}

#[test]
fn prefetch_inside_a_memory_limit_smaller_than_the_heap() {
    // In a child process, moved into a cgroup of its own with a 32 MiB limit (where this process
    // may make one: cgroup v1 or v2 memory controller, writable).
    if let Ok(cg) = std::env::var("PHEAP_TEST_CGROUP_CHILD") {
        std::fs::write(format!("{cg}/cgroup.procs"), std::process::id().to_string()).unwrap();
        let heap = Heap::open(std::env::var("PHEAP_TEST_HEAP").unwrap()).unwrap();
        let n = heap.prefetch().unwrap();
        assert!(n > 128 << 20);
        let rx = heap.begin_read().unwrap();
        assert_eq!(rx.len().unwrap(), 160);
        let v = rx.get(77u32.to_le_bytes()).unwrap().unwrap();
        assert!(v.iter().all(|&b| b == 77));
        return;
    }
    let groups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let base = groups.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, c, path) = (f.next()?, f.next()?, f.next()?);
        if c.split(',').any(|c| c == "memory") {
            Some((format!("/sys/fs/cgroup/memory{path}"), "memory.limit_in_bytes"))
        } else if c.is_empty()
            && std::path::Path::new(&format!("/sys/fs/cgroup{path}/memory.max")).exists()
        {
            Some((format!("/sys/fs/cgroup{path}"), "memory.max"))
        } else {
            None
        }
    });
    let Some((base, limit)) = base else {
        eprintln!("no memory cgroup to make: not shown");
        return;
    };
    let cg = format!("{base}/pheap-test-{}", std::process::id());
    if std::fs::create_dir(&cg).is_err()
        || std::fs::write(format!("{cg}/{limit}"), (32u64 << 20).to_string()).is_err()
    {
        eprintln!("cannot make a memory cgroup under {base}: not shown");
        let _ = std::fs::remove_dir(&cg);
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("big.pheap");
    {
        let heap = Heap::open(&path).unwrap();
        let mut tx = heap.begin_write().unwrap();
        for i in 0..160u32 {
            tx.insert(i.to_le_bytes(), vec![i as u8; 1 << 20]).unwrap();
        }
        tx.commit().unwrap();
    }
    evict(&path);
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "prefetch_inside_a_memory_limit_smaller_than_the_heap", "--nocapture"])
        .env("PHEAP_TEST_CGROUP_CHILD", &cg)
        .env("PHEAP_TEST_HEAP", &path)
        .status()
        .unwrap();
    let _ = std::fs::remove_dir(&cg);
    assert!(status.success(), "the child prefetching 160 MiB under a 32 MiB limit: {status}");
}

#[test]
fn prefetch_of_a_sub_map_brings_in_its_records_and_not_the_rest() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("cold.pheap");
    // Values of 32 KiB: out of line, not hashed on read (over 16 KiB) and not advised (under
    // 64 KiB), so a lookup touches the leaf alone and the value's pages show what was read.
    let value = |m: &str, i: u32| vec![(i as u8) ^ m.len() as u8; 32 << 10];
    {
        let heap = Heap::open(&path).unwrap();
        let mut tx = heap.begin_write().unwrap();
        for (m, n) in [("users", 400u32), ("other", 800)] {
            let mut map = tx.map_mut(m).unwrap();
            for i in 0..n {
                map.insert(i.to_le_bytes(), value(m, i)).unwrap();
            }
        }
        // A sub-map of the sub-map comes in too.
        tx.map_mut_path(&["users", "inner"]).unwrap().insert("x", vec![5u8; 32 << 10]).unwrap();
        tx.commit().unwrap();
        heap.checkpoint().unwrap();
    }
    evict(&path);
    let heap = Heap::open(&path).unwrap();
    let rx = heap.begin_read().unwrap();
    let users = rx.map("users").unwrap().unwrap();
    if resident(&path, heap.stats().unwrap().used_size) > 0.2 {
        eprintln!("the page cache kept the file after eviction: nothing to show");
        return;
    }
    let asked = users.prefetch().unwrap();
    let want = 401 * (32 << 10) as u64;
    assert!(asked >= want, "{asked} bytes asked for");
    // Before any other read (many lookups would start a warm-up of the whole file): the
    // sub-map's values, and little else, are in memory.
    let used = heap.stats().unwrap().used_size;
    let in_memory = (resident(&path, used) * used as f64) as u64;
    assert!(
        in_memory >= want && in_memory < want + (4 << 20),
        "{in_memory} bytes of {used} in memory after asking for {want}"
    );
    for (m, n) in [("users", 400u32), ("other", 800)] {
        let map = rx.map(m).unwrap().unwrap();
        for i in 0..n {
            assert_eq!(map.get(i.to_le_bytes()).unwrap().unwrap(), &value(m, i)[..]);
        }
    }
    assert_eq!(
        users.map("inner").unwrap().unwrap().get("x").unwrap().unwrap(),
        &[5u8; 32 << 10][..]
    );
}

/// `FilePmdMapped` (KiB mapped with 2 MiB page-table entries) of this process's mapping
/// starting at `addr`, from `/proc/self/smaps`.
fn pmd_mapped_kib(addr: *const libc::c_void) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ')
            && let Some((a, _)) = range.split_once('-')
            && let Ok(a) = usize::from_str_radix(a, 16)
        {
            inside = a == addr as usize;
        } else if inside && let Some(kib) = line.strip_prefix("FilePmdMapped:") {
            return kib.trim().trim_end_matches("kB").trim().parse().unwrap();
        }
    }
    panic!("no mapping starts at {addr:p}");
}

/// KiB of the first `len` bytes of the file that a fresh mapping of it (advised as given, then
/// touched once per 2 MiB) maps with 2 MiB entries: how much of it the page cache holds in
/// 2 MiB folios.
fn pmd_mapped_afresh(path: &Path, len: u64, advice: Option<libc::c_int>) -> u64 {
    with_mapping(path, len, |addr| {
        if let Some(advice) = advice {
            // SAFETY: advice on the live mapping, inside its length.
            unsafe { libc::madvise(addr, len as usize, advice) };
        }
        for at in (0..len).step_by(2 << 20) {
            // SAFETY: `at` lies inside the mapping, which is readable.
            unsafe { std::ptr::read_volatile((addr as *const u8).add(at as usize)) };
        }
        pmd_mapped_kib(addr)
    })
}

#[test]
fn prefetch_reads_a_sealed_heap_in_large_folios_and_a_writable_one_in_small() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // Can this kernel and file system read a file into 2 MiB folios at all? A cold file
    // faulted in under MADV_HUGEPAGE is, where they can.
    let probe = dir.path().join("probe");
    std::fs::write(&probe, vec![7u8; 8 << 20]).unwrap();
    File::open(&probe).unwrap().sync_all().unwrap();
    evict(&probe);
    let kernel_can = pmd_mapped_afresh(&probe, 8 << 20, Some(libc::MADV_HUGEPAGE)) > 0;

    let entries: Vec<_> =
        (0..24u32).map(|i| (i.to_le_bytes().to_vec(), vec![i as u8; 1 << 20])).collect();
    let Some(heap) = cold_heap(&dir, entries.clone()) else { return };
    let writable = dir.path().join("cold.pheap");
    let sealed = dir.path().join("sealed.pheap");
    heap.seal_to(&sealed).unwrap();
    let used = heap.stats().unwrap().used_size;

    // The writable heap, cold again (sealing read it; mapped pages stay): prefetched, its
    // pages stay in small folios (a store into a large one would dirty all of it, and the next
    // sync write 2 MiB).
    drop(heap);
    evict(&writable);
    assert!(resident(&writable, used) < 0.2);
    let heap = Heap::open(&writable).unwrap();
    heap.prefetch().unwrap();
    assert!(resident(&writable, used) > 0.95);
    assert_eq!(pmd_mapped_afresh(&writable, used, None), 0, "a writable heap in large folios");
    drop(heap);

    // The sealed copy, cold: prefetched, it is in 2 MiB folios, which any mapping of it then
    // maps with 2 MiB entries; its content reads the same.
    let len = std::fs::metadata(&sealed).unwrap().len();
    evict(&sealed);
    assert!(resident(&sealed, len) < 0.2);
    let heap = Heap::open(&sealed).unwrap();
    assert_eq!(heap.prefetch().unwrap(), len);
    assert!(resident(&sealed, len) > 0.95);
    let large = pmd_mapped_afresh(&sealed, len, None);
    if kernel_can {
        // All but the ends (a partial 2 MiB at the file's end is read in small folios).
        assert!(large >= (len >> 10) / 2, "{large} KiB of {} in 2 MiB folios", len >> 10);
    } else {
        eprintln!("this kernel or file system reads no file into 2 MiB folios: nothing to show");
    }
    let rx = heap.begin_read().unwrap();
    for (k, v) in &entries {
        assert_eq!(rx.get(k).unwrap().unwrap(), &v[..]);
    }
}
