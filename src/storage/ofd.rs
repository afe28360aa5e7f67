//! Open-file-description (OFD) byte locks: owned by an open file description, not by a process,
//! so two handles of one process exclude each other as two processes do, and the kernel drops
//! them when the last descriptor of the description closes, however its process dies.

use std::fs::File;
use std::io;
use std::os::raw::{c_int, c_short};
use std::os::unix::io::AsRawFd;

pub(super) fn lock_op(file: &File, cmd: c_int, typ: c_int, byte: u64) -> io::Result<libc::flock> {
    // SAFETY: `flock` is a plain C struct for which all-zero bytes are a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as c_short;
    fl.l_whence = libc::SEEK_SET as c_short;
    fl.l_start = byte as libc::off_t;
    fl.l_len = 1;
    loop {
        // SAFETY: an OFD lock command reads `fl` (and F_OFD_GETLK writes it), which outlives
        // the call; the descriptor is open.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
        if rc == 0 {
            return Ok(fl);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Take (or convert) a lock on `byte`; `Ok(false)` if another description holds a conflicting
/// one and `wait` is false.
pub(super) fn lock(file: &File, typ: c_int, byte: u64, wait: bool) -> io::Result<bool> {
    let cmd = if wait { libc::F_OFD_SETLKW } else { libc::F_OFD_SETLK };
    match lock_op(file, cmd, typ, byte) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

pub(super) fn unlock(file: &File, byte: u64) {
    // Unlocking a byte we hold cannot fail for any reason but a closed descriptor.
    let _ = lock_op(file, libc::F_OFD_SETLK, libc::F_UNLCK, byte);
}

/// Does another open file description hold a lock on `byte` that conflicts with `typ`?
pub(super) fn held(file: &File, typ: c_int, byte: u64) -> io::Result<bool> {
    let fl = lock_op(file, libc::F_OFD_GETLK, typ, byte)?;
    Ok(fl.l_type != libc::F_UNLCK as c_short)
}
