//! Wrong setups a user can make with ordinary shell habits are refusals, never silent loss
//! (DESIGN §5.8): hard links, a lock file deleted or replaced while the heap is in use, a copy
//! onto a heap in use or onto its own source, symbolic links and special files as destinations.
//! Refused opens leave nothing behind; lock files get the heap's owner and mode.
#![allow(unsafe_code)] // geteuid

use pheap::prelude::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use pheap::{Error, Heap};

fn put(heap: &Heap, k: &[u8], v: &[u8]) {
    let mut tx = heap.begin_write().unwrap();
    tx.insert(k, v).unwrap();
    tx.commit().unwrap();
}

fn refused(r: pheap::Result<impl std::fmt::Debug>, what: &str) -> String {
    match r {
        Err(e @ Error::Refused { .. }) => e.to_string(),
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

fn lock_of(p: &Path) -> std::path::PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push("-lock");
    s.into()
}

#[test]
fn a_hard_linked_heap_is_refused_through_every_name() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a.pheap"), d.path().join("b.pheap"));
    put(&Heap::open(&a).unwrap(), b"k", b"v");
    std::fs::hard_link(&a, &b).unwrap();
    let msg = refused(Heap::open(&a), "a");
    assert!(msg.contains("hard links"), "{msg}");
    refused(Heap::open(&b), "b");
    refused(Heap::options().read_only(true).open(&b), "b read-only");
    assert!(!lock_of(&b).exists(), "a refused open left a lock file");
    std::fs::remove_file(&b).unwrap();
    let heap = Heap::open(&a).unwrap();
    assert_eq!(heap.begin_read().unwrap().get(b"k").unwrap(), Some(&b"v"[..]));
}

#[test]
fn a_lock_file_deleted_while_the_heap_is_in_use_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a.pheap");
    let first = Heap::open(&a).unwrap();
    put(&first, b"k", b"v");
    let rx = first.begin_read().unwrap();
    std::fs::remove_file(lock_of(&a)).unwrap();
    // Another handle (as another process would) must not start on a lock file of its own.
    let msg = refused(Heap::open(&a), "after deletion");
    assert!(msg.contains("different lock file"), "{msg}");
    refused(Heap::options().read_only(true).open(&a), "read-only after deletion");
    // Replaced by another file: the same.
    std::fs::write(lock_of(&a), b"").unwrap();
    refused(Heap::open(&a), "after replacement");
    // The first handle carries on; once every handle has closed, the heap opens again.
    assert_eq!(rx.get(b"k").unwrap(), Some(&b"v"[..]));
    drop(rx);
    put(&first, b"k2", b"v2");
    drop(first);
    let heap = Heap::open(&a).unwrap();
    assert_eq!(heap.begin_read().unwrap().get(b"k2").unwrap(), Some(&b"v2"[..]));
    heap.check().unwrap();
}

#[test]
fn copies_refuse_a_destination_in_use_themselves_and_links() {
    let d = tempfile::tempdir().unwrap();
    let (src, dst) = (d.path().join("src.pheap"), d.path().join("dst.pheap"));
    let s = Heap::open(&src).unwrap();
    put(&s, b"from", b"src");
    let t = Heap::open(&dst).unwrap();
    put(&t, b"mine", b"dst");
    let msg = refused(s.copy_to_overwriting(&dst), "onto a heap in use");
    assert!(msg.contains("in use"), "{msg}");
    assert_eq!(t.begin_read().unwrap().get(b"mine").unwrap(), Some(&b"dst"[..]));
    put(&t, b"mine2", b"dst");
    drop(t);
    // Closed, it may be replaced.
    s.copy_to_overwriting(&dst).unwrap();
    let t = Heap::open(&dst).unwrap();
    assert_eq!(t.begin_read().unwrap().get(b"from").unwrap(), Some(&b"src"[..]));
    assert_eq!(t.begin_read().unwrap().get(b"mine").unwrap(), None);
    drop(t);
    // Onto itself, through its name or a symbolic link; onto a link; onto a special file.
    refused(s.copy_to_overwriting(&src), "onto itself");
    let link = d.path().join("link.pheap");
    std::os::unix::fs::symlink(&dst, &link).unwrap();
    let msg = refused(s.copy_to_overwriting(&link), "onto a symbolic link");
    assert!(msg.contains("symbolic link"), "{msg}");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    refused(s.copy_to_overwriting("/dev/null"), "onto a device");
    refused(s.copy_to_overwriting(d.path()), "onto a directory");
    // Without overwriting, an existing destination is an error and stays as it was.
    assert!(s.copy_to(&dst).is_err());
    // A new destination gets one link.
    let fresh = d.path().join("fresh.pheap");
    s.copy_to(&fresh).unwrap();
    assert_eq!(std::fs::metadata(&fresh).unwrap().nlink(), 1);
}

#[test]
fn refused_opens_leave_nothing_behind() {
    let d = tempfile::tempdir().unwrap();
    for (name, bytes) in [("empty", &b""[..]), ("text", &b"hello, this is not a heap\n"[..])] {
        let p = d.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        assert!(Heap::open(&p).is_err());
        assert!(Heap::options().read_only(true).open(&p).is_err());
        assert!(!lock_of(&p).exists(), "{name}: a refused open left a lock file");
    }
    let names: Vec<_> =
        std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn stale_copy_temporaries_are_removed_live_ones_kept() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src.pheap");
    let s = Heap::open(&src).unwrap();
    put(&s, b"k", b"v");
    let stale = d.path().join(".dst.pheap.4242-dead.copy");
    let live = d.path().join(".dst.pheap.4243-live.copy");
    drop(Heap::open(&stale).unwrap());
    let held = Heap::open(&live).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for p in [&stale, &live] {
        std::fs::File::options().write(true).open(p).unwrap().set_modified(old).unwrap();
    }
    let stats = s.copy_to(d.path().join("dst.pheap")).unwrap();
    assert_eq!(stats.stale_removed, 1);
    assert!(!stale.exists() && !lock_of(&stale).exists(), "the killed copy's files remain");
    assert!(live.exists(), "a copy in progress (its heap open) was removed");
    drop(held);
}

/// A lock file is created with the heap's owner and mode, whoever opens the heap first (root
/// running `pheap stat` must not lock the owner out) and whatever the umask.
#[test]
fn lock_files_take_the_heaps_owner_and_mode() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a.pheap");
    drop(Heap::open(&a).unwrap());
    std::fs::remove_file(lock_of(&a)).unwrap();
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o660)).unwrap();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        std::os::unix::fs::chown(&a, Some(65534), Some(65534)).unwrap();
    }
    drop(Heap::options().read_only(true).open(&a).unwrap());
    let m = std::fs::metadata(lock_of(&a)).unwrap();
    assert_eq!(m.mode() & 0o777, 0o660);
    let want = std::fs::metadata(&a).unwrap();
    assert_eq!((m.uid(), m.gid()), (want.uid(), want.gid()));
}
