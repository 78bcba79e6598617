//! Small shared helpers: errno conversion, C strings, fd-relative open and stat.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `-1` means failure with errno set; anything else is the result.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// As [`cvt`], for `libc::syscall`.
pub(crate) fn cvt_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// As [`cvt`], for the `ssize_t` calls (read, send, recv).
pub(crate) fn cvt_ssize(ret: libc::ssize_t) -> io::Result<usize> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Retries `f` while it fails with EINTR.
pub(crate) fn retry_eintr<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other,
        }
    }
}

pub(crate) fn cstring(s: &[u8]) -> io::Result<CString> {
    CString::new(s)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

pub(crate) fn path_cstring(p: &Path) -> io::Result<CString> {
    cstring(p.as_os_str().as_bytes())
}

/// Takes ownership of a descriptor a syscall has just returned.
pub(crate) fn owned_fd(ret: libc::c_long) -> io::Result<OwnedFd> {
    let raw = cvt_long(ret)?;
    let raw = libc::c_int::try_from(raw)
        .map_err(|_| io::Error::other("syscall returned an fd out of range"))?;
    // SAFETY: the syscall succeeded and returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `openat(dirfd, path, flags | O_CLOEXEC)`.
pub(crate) fn openat(dirfd: BorrowedFd<'_>, path: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstring(path.as_bytes())?;
    retry_eintr(|| {
        // SAFETY: `c` is a valid NUL-terminated string that outlives the call; dirfd is a
        // borrowed, open descriptor. The returned descriptor is taken over by `owned_fd`.
        let ret = unsafe { libc::openat(dirfd.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC) };
        owned_fd(ret as libc::c_long)
    })
}

/// Reads `fd` to its end.
pub(crate) fn read_all(fd: OwnedFd) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(2048);
    std::fs::File::from(fd).read_to_end(&mut buf)?;
    Ok(buf)
}
