//! FUSE notifications: the only way the daemon tells the kernel something unasked.
//!
//! # The daemon's deadlock rule
//!
//! A notification is a write to `/dev/fuse` that the kernel may make wait:
//! - `inval_entry` locks the parent directory's inode, so it waits for every LOOKUP and READDIR
//!   in progress in that directory, each of which waits for this daemon's answer;
//! - a page store (`store`) locks the inode's pages, so it waits for a page READ in progress,
//!   which waits for this daemon too.
//!
//! So a thread that sends one of those must not hold anything a request handler can wait for,
//! and no request handler may wait for such a thread. Concurrent `unshare -T` loops broke both
//! halves within seconds (the process-events thread sent `inval_entry` while holding the events
//! lock that every lookup in a mixed sandbox takes). The structure that keeps the rule:
//!
//! - [`Outbox`] holds a sandbox's `fuser::Notifier`; nothing else in the daemon can reach it.
//! - Entry invalidations are only ever *posted* ([`Notes::post`]): a queue push under a lock that
//!   nothing holds across anything else. One thread, [`Notes::run`], sends them, holding no lock
//!   while it sends.
//! - Whoever must know that the kernel has dropped an entry before it answers (an `unshare` reply
//!   that a child could overtake) waits on the [`Ticket`]. Only threads that no FUSE request
//!   waits for may wait: [`Ticket::wait`] refuses on a FUSE handler thread and under the events
//!   lock ([`NoWait`] marks both), and it never waits for longer than [`TICKET_PATIENCE`].
//! - Handlers may send two kinds inline, each through a method whose signature says what makes
//!   it safe: [`Outbox::attrs_now`] (attribute invalidation only: the kernel takes no sleeping
//!   lock for it) and [`Outbox::store_now`] (a page store, which needs a
//!   [`crate::readers::Rescue`]: another reader answers the page READ it may wait for). Both
//!   take `&self` of the outbox only, so no guard of the overlay's maps can be held by the
//!   caller without the borrow showing it in the code (callers drop their guards first).

use std::cell::Cell;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::readers::Rescue;

/// The longest a control request waits for its invalidations to reach the kernel. Longer means
/// a sandbox's lookups are not being answered; the reply then goes out anyway.
pub const TICKET_PATIENCE: Duration = Duration::from_secs(5);

/// An entry invalidation: make the kernel forget `name` in directory `parent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub parent: u64,
    pub name: OsString,
}

/// A sandbox's end of its FUSE session's notification channel.
#[derive(Default)]
pub struct Outbox {
    notifier: Mutex<Option<fuser::Notifier>>,
}

impl Outbox {
    pub fn set(&self, n: Option<fuser::Notifier>) {
        *self.notifier.lock().unwrap_or_else(|e| e.into_inner()) = n;
    }

    /// A clone of the notifier: the lock is never held while a notification is sent.
    fn get(&self) -> Option<fuser::Notifier> {
        self.notifier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Invalidates `ino`'s attributes now. The kernel takes only spinlocks for this (no inode or
    /// page lock), so it never waits on a request: any thread may send it, handlers included.
    /// Returns whether it reached the kernel (false: no session, or the kernel has no such
    /// inode cached).
    pub fn attrs_now(&self, ino: u64) -> bool {
        let Some(n) = self.get() else { return false };
        report(
            "notify inval inode (attributes)",
            n.inval_inode(fuser::INodeNo(ino), -1, 0),
        )
    }

    /// Stores `bytes` at `offset` of `ino`'s page cache (extending i_size to reach them) from a
    /// request handler. It may wait for a page READ of that inode in progress: `_rescue` keeps
    /// another reader reading to answer it. The caller holds no lock of the overlay's (see the
    /// module's rule). Returns whether it reached the kernel.
    pub fn store_now(&self, _rescue: &Rescue<'_>, ino: u64, offset: u64, bytes: &[u8]) -> bool {
        let Some(n) = self.get() else { return false };
        report("notify store", n.store(fuser::INodeNo(ino), offset, bytes))
    }
}

/// Logs a failed notification; ENOENT (the kernel has nothing cached for it) is no failure.
fn report(what: &str, r: io::Result<()>) -> bool {
    match r {
        Ok(()) => true,
        Err(e) => {
            if e.raw_os_error() != Some(libc::ENOENT) {
                tracing::warn!(error = %e, "{what}");
            }
            false
        }
    }
}

thread_local! {
    /// How many reasons this thread has not to wait for a notification (see [`NoWait`]).
    static NO_WAIT: Cell<u32> = const { Cell::new(0) };
}

/// Marks the current thread, while alive, as one that FUSE requests may wait for: a FUSE
/// request handler, or a holder of the events lock. [`Ticket::wait`] refuses to wait there.
pub struct NoWait(());

impl NoWait {
    pub fn enter() -> NoWait {
        NO_WAIT.set(NO_WAIT.get() + 1);
        NoWait(())
    }

    /// Whether the current thread is one that must never wait for a notification.
    pub fn active() -> bool {
        NO_WAIT.get() > 0
    }
}

impl Drop for NoWait {
    fn drop(&mut self) {
        NO_WAIT.set(NO_WAIT.get().saturating_sub(1));
    }
}

#[derive(Default)]
struct Done {
    left: Mutex<usize>,
    cv: Condvar,
}

/// Completion of posted invalidations.
#[must_use = "a ticket that is not waited for says nothing; drop it with `let _ =` when the \
              caller must not wait"]
pub struct Ticket(Option<Arc<Done>>);

impl Ticket {
    /// A ticket with nothing to wait for.
    pub fn done() -> Ticket {
        Ticket(None)
    }

    /// Waits until every invalidation of this ticket was sent (or failed). Returns false when
    /// it did not wait: on a thread that must not ([`NoWait`]), or after [`TICKET_PATIENCE`].
    pub fn wait(self) -> bool {
        let Some(done) = self.0 else { return true };
        if NoWait::active() {
            // A bug: this thread may be the one a posted invalidation waits for.
            debug_assert!(false, "Ticket::wait on a thread FUSE requests may wait for");
            tracing::error!("refusing to wait for a notification on a FUSE or events thread");
            return false;
        }
        let deadline = Instant::now() + TICKET_PATIENCE;
        let mut left = done.left.lock().unwrap_or_else(|e| e.into_inner());
        while *left > 0 {
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!("invalidations not sent within {TICKET_PATIENCE:?}; answering");
                return false;
            }
            left = done
                .cv
                .wait_timeout(left, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

struct Job {
    notifier: fuser::Notifier,
    entries: Vec<Entry>,
    done: Option<Arc<Done>>,
}

/// The daemon's queue of entry invalidations and the thread that sends them.
#[derive(Default)]
pub struct Notes {
    queue: Mutex<VecDeque<Job>>,
    wake: Condvar,
}

impl Notes {
    /// Queues `entries` of the sandbox behind `outbox`. Never blocks on the kernel; safe from
    /// any thread, under any lock.
    pub fn post(&self, outbox: &Outbox, entries: Vec<Entry>) -> Ticket {
        if entries.is_empty() {
            return Ticket::done();
        }
        let Some(notifier) = outbox.get() else {
            return Ticket::done();
        };
        let done = Arc::new(Done {
            left: Mutex::new(1),
            cv: Condvar::new(),
        });
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(Job {
                notifier,
                entries,
                done: Some(done.clone()),
            });
        self.wake.notify_one();
        Ticket(Some(done))
    }

    /// Number of jobs not sent yet.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The notifier thread: sends every queued invalidation, holding no lock while it does.
    pub fn run(&self) {
        loop {
            let job = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    match q.pop_front() {
                        Some(j) => break j,
                        None => q = self.wake.wait(q).unwrap_or_else(|e| e.into_inner()),
                    }
                }
            };
            for e in &job.entries {
                report(
                    "notify inval entry",
                    job.notifier.inval_entry(fuser::INodeNo(e.parent), &e.name),
                );
            }
            if let Some(done) = job.done {
                let mut left = done.left.lock().unwrap_or_else(|e| e.into_inner());
                *left = left.saturating_sub(1);
                done.cv.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_with_nothing_posted_is_done() {
        assert!(Ticket::done().wait());
        let notes = Notes::default();
        // No session: nothing is queued and nothing waits.
        let t = notes.post(
            &Outbox::default(),
            vec![Entry {
                parent: 1,
                name: "42".into(),
            }],
        );
        assert_eq!(notes.queued(), 0);
        assert!(t.wait());
    }

    #[test]
    fn no_wait_marks_nest_and_end() {
        assert!(!NoWait::active());
        {
            let _a = NoWait::enter();
            let _b = NoWait::enter();
            assert!(NoWait::active());
        }
        assert!(!NoWait::active());
    }

    #[test]
    fn a_waiting_ticket_is_refused_on_a_no_wait_thread_in_release_builds() {
        // Only meaningful without debug assertions (which make the refusal a panic).
        if cfg!(debug_assertions) {
            let r = std::panic::catch_unwind(|| {
                let _g = NoWait::enter();
                Ticket(Some(Arc::new(Done {
                    left: Mutex::new(1),
                    cv: Condvar::new(),
                })))
                .wait()
            });
            assert!(r.is_err(), "waiting on a NoWait thread must be refused");
            NO_WAIT.set(0);
        } else {
            let _g = NoWait::enter();
            let t = Ticket(Some(Arc::new(Done {
                left: Mutex::new(1),
                cv: Condvar::new(),
            })));
            assert!(!t.wait());
        }
    }
}
