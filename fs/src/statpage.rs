//! Page-cached `PID/stat`: one FUSE round trip (the OPEN) per open+read+close instead of two.
//!
//! A virtual `PID/stat` read with direct I/O costs an OPEN and a READ, each a round trip to the
//! daemon (the RELEASE is queued, nobody waits for it). `ps -ef` does that for every process.
//! Instead, when no other handle has the inode open, the OPEN renders the caller's content and
//! leaves it in the inode's page cache (`notify_store`); the reader's read then never leaves
//! the kernel. Per inode the daemon knows what the kernel holds ([`StatPage::held`]): most
//! processes' lines do not change between two `ps`, and then the OPEN sends nothing at all.
//!
//! The rules that keep every reader's bytes its own and fresh:
//! - Only one page-cached handle per inode, and only when it is the inode's only handle: the
//!   pages hold exactly that handle's content. An open while another handle is open reads with
//!   direct I/O, as before.
//! - The kernel's i_size is the content's length. A notify_store only ever extends i_size, and
//!   the kernel's i_size is at most the largest size it was ever given for the inode
//!   ([`StatPage::max_size`]), so content at least that long is stored and needs nothing else.
//!   Shorter content is read directly (that handle only): bringing i_size down would take an
//!   attribute reply, which the kernel drops when an attribute invalidation overtakes it (the
//!   [`Refresher`]'s, for instance), leaving the reader a stale, possibly zero, size.
//! - procfs generates the line at the read, not at the open. A page-cached handle still open
//!   [`FRESH_FOR`] after its content was rendered has its attributes invalidated (by the
//!   [`Refresher`] thread), so its next read asks GETATTR, which renders the line again and
//!   replaces the pages if it changed. A file kept open and read again is at most that old.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::state::Sandbox;

/// How old a page-cached `PID/stat` may get while its handle stays open: one clock tick, the
/// unit of every time field of the line.
pub const FRESH_FOR: Duration = Duration::from_millis(10);
/// A GETATTR renders the line again once it is this old. The [`Refresher`] handles every
/// entry due within this much in one wake-up (at most one per `REFRESH_AT`, not one per open).
pub const REFRESH_AT: Duration = Duration::from_millis(5);

/// What the kernel holds for one `PID/stat` inode, and who has it open.
#[derive(Default)]
pub struct StatPage {
    /// The content the kernel's i_size and pages hold (pages may have been dropped since; then
    /// a page read is answered from the reading handle's own content, which equals this). None
    /// when unknown: never stored, or changed by a direct-I/O open (see `Overlay::allow_splice`).
    pub held: Option<Vec<u8>>,
    /// Open handles of the inode, page-cached or not.
    pub open: u32,
    /// Handles ever opened: an open that decided with the lock and sent its notification
    /// without it finds out, on taking the lock again, whether another open came meanwhile.
    pub opened: u64,
    /// The length of the content an open is storing (or making the kernel read) right now,
    /// without the lock: the size attribute replies give meanwhile, so that a reply the kernel
    /// applies after the store does not cut i_size back (to 0: an empty read).
    pub sending: Option<u64>,
    /// The largest size the kernel was given for the inode (attribute replies, stores): its
    /// i_size is at most this (see `Overlay::open_pid_stat`).
    pub max_size: u64,
    /// The page-cached handle, while it is open, and the length of its content.
    pub cached_fh: Option<u64>,
    pub cached_len: u64,
    /// Changes when the content of the page-cached handle changes without a store: the mtime
    /// of attribute replies, which makes the kernel drop the inode's pages (AUTO_INVAL_DATA).
    pub generation: u64,
}

impl StatPage {
    /// The size attribute replies give: the page-cached handle's length while there is one
    /// (its reads stop at i_size), else what the kernel holds; 0 (procfs's size) when unknown.
    pub fn size(&self) -> u64 {
        if let Some(len) = self.sending {
            return len;
        }
        match (self.cached_fh, &self.held) {
            (Some(_), _) => self.cached_len,
            (None, Some(h)) => h.len() as u64,
            (None, None) => 0,
        }
    }
}

/// The `PID/stat` inodes of one sandbox's overlay.
#[derive(Default)]
pub struct StatPages {
    map: Mutex<HashMap<u64, StatPage>>,
}

impl StatPages {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, StatPage>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new handle of `ino`. True when it is the only one (it may read through the page
    /// cache); otherwise what the kernel holds becomes unknown (the direct-I/O open that
    /// follows changes i_size and drops the pages).
    pub fn register(&self, ino: u64) -> bool {
        let mut m = self.lock();
        let p = m.entry(ino).or_default();
        p.open += 1;
        p.opened += 1;
        if p.open > 1 {
            p.held = None;
        }
        p.open == 1
    }

    /// A handle of `ino` was released.
    pub fn release(&self, ino: u64, fh: u64) {
        let mut m = self.lock();
        if let Some(p) = m.get_mut(&ino) {
            p.open = p.open.saturating_sub(1);
            if p.cached_fh == Some(fh) {
                p.cached_fh = None;
            }
        }
    }

    /// The kernel forgot `ino`.
    pub fn forget(&self, ino: u64) {
        self.lock().remove(&ino);
    }

    /// Whether `fh` is still the page-cached handle of `ino`.
    fn is_cached(&self, ino: u64, fh: u64) -> bool {
        self.lock()
            .get(&ino)
            .is_some_and(|p| p.cached_fh == Some(fh))
    }
}

struct Due {
    at: Instant,
    sb: Weak<Sandbox>,
    ino: u64,
    fh: u64,
}

/// Invalidates the attributes of page-cached `PID/stat` handles still open [`FRESH_FOR`] after
/// their content was rendered, so their next read renders it again (one thread per daemon).
#[derive(Default)]
pub struct Refresher {
    queue: Mutex<VecDeque<Due>>,
    wake: Condvar,
}

impl Refresher {
    /// Checks handle `fh` of `ino` in `sb` again in [`FRESH_FOR`].
    pub fn later(&self, sb: &Arc<Sandbox>, ino: u64, fh: u64) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = q.is_empty();
        // Every entry waits the same time: the queue is in deadline order.
        q.push_back(Due {
            at: Instant::now() + FRESH_FOR,
            sb: Arc::downgrade(sb),
            ino,
            fh,
        });
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// The thread's loop: never returns.
    pub fn run(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = Instant::now();
            let wait = match q.front() {
                None => None,
                Some(d) if d.at > now => Some(d.at - now),
                Some(_) => {
                    // Everything due before the next wake-up could come, at least REFRESH_AT old.
                    let horizon = now + (FRESH_FOR - REFRESH_AT);
                    let n = q.iter().take_while(|d| d.at <= horizon).count();
                    let batch: Vec<Due> = q.drain(..n).collect();
                    drop(q);
                    for due in batch {
                        if let Some(sb) = due.sb.upgrade() {
                            refresh(&sb, due.ino, due.fh);
                        }
                    }
                    q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                    continue;
                }
            };
            q = match wait {
                None => self.wake.wait(q).unwrap_or_else(|e| e.into_inner()),
                Some(t) => {
                    self.wake
                        .wait_timeout(q, t)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

/// Invalidates the attributes (only: no page is dropped, which could wait on a page read) of
/// `ino` if `fh` is still its page-cached handle.
fn refresh(sb: &Sandbox, ino: u64, fh: u64) {
    if !sb.stat_pages.is_cached(ino, fh) {
        return;
    }
    sb.outbox.attrs_now(ino);
}
