//! What `fork` leaves a child of a process with open heaps.
//!
//! A child inherits its parent's descriptors and mappings, and with them references to the
//! parent's lock-file descriptions and the OFD locks they hold: a child that outlived a parent
//! killed mid-commit would keep the writer lock and the parent's pins alive. So the lock file's
//! mapping is not inherited (MADV_DONTFORK), and in the child, right after fork, every lock-file
//! descriptor is pointed at /dev/null and the fork generation is bumped: handles opened before
//! the fork refuse all use in the child (`Error::Forked`).

use std::fs::OpenOptions;
use std::os::raw::c_int;
use std::os::unix::io::IntoRawFd;
use std::sync::Once;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

static FORK_GEN: AtomicU64 = AtomicU64::new(0);
static DEVNULL: AtomicI32 = AtomicI32::new(-1);
const FORK_TABLE: usize = 1024;
static LOCK_FDS: [AtomicI32; FORK_TABLE] = [const { AtomicI32::new(-1) }; FORK_TABLE];

/// Counts the forks this process descends from; a handle opened under another value was
/// inherited through `fork`.
pub(crate) fn fork_generation() -> u64 {
    FORK_GEN.load(Ordering::SeqCst)
}

extern "C" fn after_fork_in_child() {
    FORK_GEN.fetch_add(1, Ordering::SeqCst);
    let null = DEVNULL.load(Ordering::SeqCst);
    if null < 0 {
        return;
    }
    for fd in &LOCK_FDS {
        let fd = fd.load(Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: dup3 is async-signal-safe, as a fork handler requires; `fd` is a lock-file
            // descriptor (entries are cleared before their descriptor closes) and `null` a
            // descriptor of /dev/null that stays open for the life of the process.
            unsafe { libc::dup3(null, fd, libc::O_CLOEXEC) };
        }
    }
}

pub(super) fn install_fork_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Ok(null) = OpenOptions::new().read(true).open("/dev/null") {
            DEVNULL.store(null.into_raw_fd(), Ordering::SeqCst);
        }
        // SAFETY: registers a handler that only does async-signal-safe work (atomics, dup3).
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
}

/// Enter `fd` in the table the fork handler walks; `None` if the table is full (a child then
/// keeps that handle's locks referenced until it exits or execs).
pub(super) fn register_fd(fd: c_int) -> Option<usize> {
    LOCK_FDS
        .iter()
        .position(|e| e.compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst).is_ok())
}

/// Take `entry` (from [`register_fd`]) out of the table, before its descriptor closes, so the
/// fork handler never touches a reused descriptor number.
pub(super) fn unregister_fd(entry: usize) {
    LOCK_FDS[entry].store(-1, Ordering::SeqCst);
}
