//! The unsafe seam of timensfs: every raw syscall the project makes lives in this crate, each
//! behind a small safe function.
//!
//! - [`procconn`]: the kernel's process-events connector (fork, exec, exit), root only.
//! - [`creds`]: act with a caller's filesystem credentials on the current thread only, so procfs
//!   judges the caller and not the daemon.
//! - [`fdpass`]: file descriptors over a Unix stream socket (`SCM_RIGHTS`).
//! - [`mountapi`]: the new mount API (`open_tree`, `fsopen`, `move_mount`) and FUSE mounting.
//! - [`sock`]: a Unix socket server's peer credentials (`SO_PEERCRED`) and epoll set.
//!
//! What this crate must not do: decide policy, log, or read anything on a caller's behalf. It
//! only wraps the kernel; callers decide what to do with the results.
//!
//! # Errors
//!
//! Functions on a hot path ([`creds::read_creds`], [`creds::assume`], [`fdpass`],
//! [`procconn::ProcConnector::recv`]) return the plain `io::Error` of the failing syscall, so
//! `raw_os_error()` gives the errno directly. Set-up functions ([`mountapi`],
//! [`procconn::ProcConnector::open`]) wrap it in a [`StepError`] naming the step and the path;
//! the `io::ErrorKind` is kept, and [`errno_of`] recovers the errno from either form.

pub mod creds;
pub mod fdpass;
pub mod mountapi;
pub mod procconn;
pub mod sock;
mod util;

use std::fmt;
use std::io;

/// An OS error annotated with the step that failed and the path (or object) it concerned.
/// Carried inside an `io::Error` of the same kind; see [`errno_of`].
#[derive(Debug)]
pub struct StepError {
    /// The operation that failed, e.g. `"mount_fuse"`.
    pub step: &'static str,
    /// The path or object it was applied to, as text.
    pub path: String,
    /// The error the kernel returned.
    pub source: io::Error,
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.step, self.path, self.source)
    }
}

impl std::error::Error for StepError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The errno behind `e`: its own `raw_os_error()`, or that of the [`StepError`] it carries.
pub fn errno_of(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        e.get_ref()?
            .downcast_ref::<StepError>()?
            .source
            .raw_os_error()
    })
}

/// Wraps `source` with the step and path that failed, keeping its kind and errno.
pub(crate) fn step_error(
    step: &'static str,
    path: impl fmt::Display,
    source: io::Error,
) -> io::Error {
    io::Error::new(
        source.kind(),
        StepError {
            step,
            path: path.to_string(),
            source,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_of_plain_and_wrapped() {
        let plain = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(errno_of(&plain), Some(libc::EACCES));
        let wrapped = step_error(
            "mount_fuse",
            "/x",
            io::Error::from_raw_os_error(libc::EPERM),
        );
        assert_eq!(errno_of(&wrapped), Some(libc::EPERM));
        assert_eq!(wrapped.kind(), io::ErrorKind::PermissionDenied);
        assert!(
            wrapped.to_string().starts_with("mount_fuse /x: "),
            "{wrapped}"
        );
        assert_eq!(errno_of(&io::Error::other("no errno")), None);
    }
}
