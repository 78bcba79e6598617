//! One thread of a sandbox's FUSE session reads `/dev/fuse` at a time; the others wait parked
//! until a request may need them.
//!
//! Why: the kernel hands each queued request to the reader that has waited longest (exclusive
//! waiters queue in order), so with two threads in `read()` the two requests of every
//! open+read+close of a page-cached `PID/stat` (the OPEN, and the RELEASE queued by the close)
//! wake the two threads in turn. The one woken by the RELEASE either preempts the reader or runs
//! later for nothing: `ps -ef` in a sandbox with a boottime offset cost the daemon 2.5 context
//! switches per process, each several µs on the VM this was measured on. With one reader and
//! `SCHED_BATCH` (see [`Readers::enter`]) it costs 1.3.
//!
//! Why not one thread: a request handler can wait on something that only another reader can
//! bring. A notification that locks pages waits for the page READ in progress on them; a handler
//! that takes the events lock waits for its holder, which may be invalidating an entry and so
//! waiting for a LOOKUP in progress. So a thread that has replied parks (inside the handler, after
//! its reply, holding nothing) only while another thread reads, and goes back to reading when
//! - a handler is about to wait like that ([`Readers::rescue`]);
//! - the reading thread has been inside one request for a whole [`TICK`] while no other request
//!   began (it waits on something not foreseen here): no request waits on it for long;
//! - the connection is gone: every thread must return for the session to end;
//! - the reading thread now runs on another CPU.
//!
//! Only a thread that may run on one CPU alone (a daemon pinned to one CPU, a one-CPU machine)
//! and replied there while another reader did parks. With more CPUs both keep reading: the
//! RELEASE's wake-up then puts a reader on the requester's CPU, ready before the next OPEN,
//! while a lone reader is woken on the idle CPU for every request. On a VM whose idle vCPUs
//! halt, that remote wake-up made `/proc/uptime` take 58 µs instead of 6.5 µs.

use std::cell::Cell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often a parked thread checks that the reading thread makes progress and that the
/// connection is alive (the session ends at most this long after the sandbox's mount).
pub const TICK: Duration = Duration::from_millis(500);

/// `cpus` entry of a parked thread.
const PARKED: i32 = -1;
/// `cpus` entry of a thread that has not replied yet.
const UNKNOWN: i32 = -2;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub struct Readers {
    /// Distinguishes sessions in the per-thread index (a thread serves one session).
    id: u64,
    /// The CPU each thread last replied on, or PARKED, or UNKNOWN; changed to PARKED and back
    /// only under `lock`. Indexed in the order of the threads' first requests.
    cpus: Vec<AtomicI32>,
    next_index: AtomicU32,
    /// Handlers inside a section that may wait on another reader.
    rescues: AtomicU32,
    /// Requests begun, and threads inside a handler: what the watchdog looks at.
    begun: AtomicU64,
    busy: AtomicU32,
    lock: Mutex<()>,
    wake: Condvar,
    /// The connection, to notice its end (poll reports POLLERR once it is aborted).
    dev: Option<OwnedFd>,
}

/// A request being handled; dropped after its reply, where the thread may park.
/// The thread is marked as one FUSE requests wait for (see `notify::NoWait`) meanwhile.
pub struct Busy<'a>(&'a Readers, #[allow(dead_code)] crate::notify::NoWait);

/// A section of a handler that may wait on another reader.
pub struct Rescue<'a>(&'a Readers);

impl Readers {
    /// `threads`: the session's threads; `dev`: a duplicate of its `/dev/fuse` descriptor
    /// (None: never parks).
    pub fn new(threads: u32, dev: Option<OwnedFd>) -> Self {
        let threads = if dev.is_some() { threads.max(1) } else { 1 };
        Readers {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            cpus: (0..threads).map(|_| AtomicI32::new(UNKNOWN)).collect(),
            next_index: AtomicU32::new(0),
            rescues: AtomicU32::new(0),
            begun: AtomicU64::new(0),
            busy: AtomicU32::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            dev,
        }
    }

    /// Called first in every request handler. The session's threads run `SCHED_BATCH`: a
    /// request queued while a reader runs (the RELEASE of its close) then waits for the reader
    /// to block (in its next OPEN) instead of preempting it, and both are read in one wake-up.
    pub fn enter(&self) -> Busy<'_> {
        batch_once();
        self.begun.fetch_add(1, Ordering::Relaxed);
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self, crate::notify::NoWait::enter())
    }

    /// Makes every parked thread read again until the returned guard drops.
    pub fn rescue(&self) -> Rescue<'_> {
        self.rescues.fetch_add(1, Ordering::SeqCst);
        if self.cpus.len() > 1 {
            // Under the lock: a thread deciding to park either sees the count or is waiting.
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
        Rescue(self)
    }

    /// This thread's index in `cpus`, None for threads beyond the session's count.
    fn index(&self) -> Option<usize> {
        thread_local! {
            static INDEX: Cell<(u64, usize)> = const { Cell::new((0, 0)) };
        }
        let (id, i) = INDEX.get();
        if id == self.id {
            return Some(i);
        }
        let i = self.next_index.fetch_add(1, Ordering::Relaxed) as usize;
        if i >= self.cpus.len() {
            return None;
        }
        INDEX.set((self.id, i));
        Some(i)
    }

    /// Whether a thread other than `me` reads and last replied on `cpu`.
    fn reader_on(&self, me: usize, cpu: i32) -> bool {
        self.cpus
            .iter()
            .enumerate()
            .any(|(i, c)| i != me && c.load(Ordering::Relaxed) == cpu)
    }

    /// After a reply: parks this thread while another one reads on the same CPU and no rescue
    /// is on. A reader on another CPU is left alone: waking a thread on an idle CPU is what
    /// costs there (tens of µs on a VM whose idle vCPUs halt), and the thread on the reader's
    /// own CPU answers first.
    fn after(&self) {
        self.busy.fetch_sub(1, Ordering::Relaxed);
        if self.cpus.len() <= 1 {
            return;
        }
        let Some(me) = self.index() else { return };
        // SAFETY: sched_getcpu takes no arguments; it returns -1 on failure, which no entry
        // of another thread matches.
        let cpu = unsafe { libc::sched_getcpu() };
        self.cpus[me].store(cpu, Ordering::Relaxed);
        if cpu < 0 || self.rescues.load(Ordering::SeqCst) > 0 || !self.reader_on(me, cpu) {
            return;
        }
        if !one_cpu_lately() {
            return;
        }
        let mut g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.rescues.load(Ordering::SeqCst) > 0 || !self.reader_on(me, cpu) {
            return;
        }
        self.cpus[me].store(PARKED, Ordering::Relaxed);
        let mut seen = self.begun.load(Ordering::Relaxed);
        loop {
            let (g2, timeout) = self
                .wake
                .wait_timeout(g, TICK)
                .unwrap_or_else(|e| e.into_inner());
            g = g2;
            if self.rescues.load(Ordering::SeqCst) > 0 {
                break;
            }
            if !timeout.timed_out() {
                continue;
            }
            if self.gone() || !self.reader_on(me, cpu) || !one_cpu() {
                // The connection ended, or the reader now runs elsewhere, or may.
                break;
            }
            let now = self.begun.load(Ordering::Relaxed);
            if now == seen && self.busy.load(Ordering::Relaxed) > 0 {
                tracing::debug!("a request has taken a whole tick: a parked reader reads again");
                break;
            }
            seen = now;
        }
        self.cpus[me].store(UNKNOWN, Ordering::Relaxed);
        drop(g);
    }

    /// Whether the connection is known to be alive: its mount's superblock has not been shut
    /// down (false when there is no descriptor to tell by).
    pub fn connected(&self) -> bool {
        !self.gone()
    }

    /// Whether the connection has been aborted (the sandbox's mount is gone).
    fn gone(&self) -> bool {
        let Some(dev) = &self.dev else { return true };
        let mut pfd = libc::pollfd {
            fd: dev.as_raw_fd(),
            events: 0,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid pollfd array of length 1; timeout 0 never blocks.
        let r = unsafe { libc::poll(&mut pfd, 1, 0) };
        r > 0 && pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
    }

    #[cfg(test)]
    fn parked(&self) -> usize {
        self.cpus
            .iter()
            .filter(|c| c.load(Ordering::Relaxed) == PARKED)
            .count()
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.after();
    }
}

impl Drop for Rescue<'_> {
    fn drop(&mut self) {
        self.0.rescues.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether the calling thread may run on one CPU only.
fn one_cpu() -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size given.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } != 0 {
        return false;
    }
    // SAFETY: `set` was filled by sched_getaffinity.
    unsafe { libc::CPU_COUNT(&set) == 1 }
}

/// [`one_cpu`] as the calling thread last found it, asked again once it is a [`TICK`] old: a
/// system call per request would otherwise be added wherever two threads share a CPU without
/// being pinned to it. A new affinity counts within a tick, as in the parked loop.
fn one_cpu_lately() -> bool {
    thread_local! {
        static LAST: Cell<Option<(Instant, bool)>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    if let Some((at, one)) = LAST.get() {
        if now.duration_since(at) < TICK {
            return one;
        }
    }
    let one = one_cpu();
    LAST.set(Some((now, one)));
    one
}

/// Switches the calling thread to `SCHED_BATCH`, once per thread.
fn batch_once() {
    thread_local! {
        static DONE: Cell<bool> = const { Cell::new(false) };
    }
    DONE.with(|d| {
        if d.get() {
            return;
        }
        d.set(true);
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "SCHED_BATCH refused");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn pipe_pair() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid array of two ints.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        use std::os::fd::FromRawFd;
        // SAFETY: pipe() returned two fresh descriptors that nothing else owns.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// Pins the calling thread to `cpu`.
    fn pin(cpu: usize) {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above, `cpu` is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of that size.
        let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
        assert_eq!(
            r,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }

    /// A thread on `cpu` that handles one request (and may park after it).
    fn request_on(readers: &Arc<Readers>, cpu: usize) -> std::thread::JoinHandle<()> {
        let rd = readers.clone();
        std::thread::spawn(move || {
            pin(cpu);
            drop(rd.enter());
        })
    }

    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(5), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Two threads on CPU 0, the test's and another one that has handled one request and
    /// parked; with the pipe's write end (the "connection") and the parked thread's handle.
    fn one_parked() -> (Arc<Readers>, OwnedFd, std::thread::JoinHandle<()>) {
        pin(0);
        let (r, w) = pipe_pair();
        let readers = Arc::new(Readers::new(2, Some(r)));
        drop(readers.enter());
        let parked = request_on(&readers, 0);
        wait_for("one thread parks", || readers.parked() == 1);
        (readers, w, parked)
    }

    /// Two threads on one CPU: the second to reply parks while the first reads; a rescue
    /// brings it back, and it parks again after its next request once the rescue is over.
    #[test]
    fn parks_one_of_two_on_a_cpu_and_rescue_wakes_it() {
        pin(0);
        let (r, _w) = pipe_pair();
        let readers = Arc::new(Readers::new(2, Some(r)));
        drop(readers.enter());
        // The session's other thread: one request per message.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rd = readers.clone();
        let other = std::thread::spawn(move || {
            pin(0);
            while rx.recv().is_ok() {
                drop(rd.enter());
            }
        });
        tx.send(()).unwrap();
        wait_for("one thread parks", || readers.parked() == 1);
        // The last reader never parks.
        drop(readers.enter());
        assert_eq!(readers.parked(), 1);
        let g = readers.rescue();
        wait_for("the rescue unparks it", || readers.parked() == 0);
        // While the rescue lasts, nobody parks.
        drop(readers.enter());
        tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(readers.parked(), 0);
        drop(g);
        tx.send(()).unwrap();
        wait_for("parks again after the rescue", || readers.parked() == 1);
        let g = readers.rescue();
        drop(tx);
        other.join().unwrap();
        drop(g);
    }

    /// Threads on different CPUs both keep reading.
    #[test]
    fn threads_on_different_cpus_do_not_park() {
        // SAFETY: sysconf has no preconditions.
        if unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } < 2 {
            eprintln!("skipped: needs two CPUs");
            return;
        }
        pin(0);
        let (r, _w) = pipe_pair();
        let readers = Arc::new(Readers::new(2, Some(r)));
        drop(readers.enter());
        let t = request_on(&readers, 1);
        // It would park at once if it were going to: give it a moment, then look.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(readers.parked(), 0);
        t.join().unwrap();
    }

    /// Parking needs an affinity of one CPU.
    #[test]
    fn one_cpu_follows_the_affinity() {
        // SAFETY: sysconf has no preconditions.
        if unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } < 2 {
            eprintln!("skipped: needs two CPUs");
            return;
        }
        let t = std::thread::spawn(|| {
            // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            unsafe {
                libc::CPU_SET(0, &mut set);
                libc::CPU_SET(1, &mut set);
            }
            // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t.
            let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
            assert_eq!(r, 0);
            let two = one_cpu();
            pin(1);
            (two, one_cpu())
        });
        assert_eq!(t.join().unwrap(), (false, true));
    }

    /// A reader stuck inside one request for a whole tick brings the parked thread back.
    #[test]
    fn watchdog_unparks_when_a_request_hangs() {
        let (readers, w, parked) = one_parked();
        let stuck = readers.enter();
        let t0 = Instant::now();
        parked.join().unwrap();
        assert!(t0.elapsed() >= TICK, "unparked before a whole tick");
        assert_eq!(readers.parked(), 0);
        // The other thread has ended, so this one would park after its request: only the
        // connection's end brings it back.
        drop(w);
        drop(stuck);
    }

    /// A parked thread returns once the connection is gone (here: the pipe's write end closed,
    /// which poll reports as POLLHUP), so the session's threads can all end.
    #[test]
    fn returns_when_the_connection_ends() {
        let (readers, w, parked) = one_parked();
        drop(w);
        parked.join().unwrap();
        assert_eq!(readers.parked(), 0);
    }

    /// One thread, or no device to watch: never parks.
    #[test]
    fn single_thread_never_parks() {
        pin(0);
        let readers = Arc::new(Readers::new(2, None));
        drop(readers.enter());
        request_on(&readers, 0).join().unwrap();
        assert_eq!(readers.parked(), 0);
    }
}
