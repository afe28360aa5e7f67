//! `Heap::prefetch` brings a cold heap into the page cache (observed with `mincore` after the
//! file's pages were evicted), and is safe beside a writer.

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

/// The fraction of the first `len` bytes of the file that are in the page cache.
fn resident(path: &Path, len: u64) -> f64 {
    let f = File::open(path).unwrap();
    let page = 4096usize;
    let pages = (len as usize).div_ceil(page);
    // SAFETY: a fresh read-only shared mapping of `len` bytes of an open file, checked for
    // failure, only passed to mincore (never read), and unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len as usize,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED);
    let mut vec = vec![0u8; pages];
    // SAFETY: `addr` maps `len` bytes; `vec` holds one byte per page of them.
    let rc = unsafe { libc::mincore(addr, len as usize, vec.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: unmaps exactly the mapping made above.
    unsafe { libc::munmap(addr, len as usize) };
    vec.iter().filter(|&&b| b & 1 == 1).count() as f64 / pages as f64
}

#[test]
fn prefetch_brings_a_cold_heap_into_the_page_cache() {
    // On the project's disk, not a tmpfs (whose pages cannot be evicted).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("cold.pheap");
    let heap = Heap::open(&path).unwrap();
    let mut tx = heap.begin_write().unwrap();
    for i in 0..48u32 {
        tx.insert(i.to_le_bytes(), vec![i as u8; 1 << 20]).unwrap();
    }
    tx.commit().unwrap();
    heap.checkpoint().unwrap();
    let used = heap.stats().unwrap().used_size;
    drop(heap);
    evict(&path);
    let before = resident(&path, used);
    if before > 0.5 {
        eprintln!("the page cache kept {before:.2} of the file after eviction: nothing to show");
        return;
    }
    let heap = Heap::open(&path).unwrap();
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
