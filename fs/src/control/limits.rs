//! What bounds a control client: the limits, the count of open connections per uid, the
//! framer that reads a request line into a bounded buffer, and the work queue that serves
//! root first. Pure data structures (no I/O), unit-tested here; `server.rs` applies them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// The numbers that bound the control socket. Every one is independent of how many clients
/// connect: whatever they do, the daemon keeps `workers` control threads and at most
/// `users_total + root_total` connections (with at most `fds_max` passed fds each).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Open connections (read, queued or being answered) of one non-root uid.
    pub per_uid: usize,
    /// Open connections of all non-root uids together.
    pub users_total: usize,
    /// Open connections of uid 0 (its own budget: no other uid can use it up).
    pub root_total: usize,
    /// Longest request line, newline included.
    pub request_max: usize,
    /// Most fds one request may carry.
    pub fds_max: usize,
    /// Time from accept to a complete request, for a non-root peer.
    pub user_deadline: Duration,
    /// The same for root (`timens` connects before it mounts, then sends).
    pub root_deadline: Duration,
    /// Time to write an answer (a peer that does not read must not hold a worker).
    pub answer_deadline: Duration,
    /// Worker threads that run requests.
    pub workers: usize,
    /// Of those, how many may run non-root requests at once: the rest are root's.
    pub user_workers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_uid: 32,
            users_total: 256,
            root_total: 256,
            request_max: timens_proto::REQUEST_MAX,
            fds_max: timens_proto::REQUEST_FDS_MAX,
            user_deadline: Duration::from_secs(2),
            root_deadline: Duration::from_secs(10),
            answer_deadline: Duration::from_secs(2),
            workers: 6,
            user_workers: 4,
        }
    }
}

/// Whose budget a connection is counted in, and which queue its request joins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Root,
    User,
}

impl Class {
    pub fn of(uid: u32) -> Class {
        if uid == 0 {
            Class::Root
        } else {
            Class::User
        }
    }
}

/// Why a connection was turned away at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// This uid already has `per_uid` connections open.
    Uid,
    /// All non-root uids together have `users_total` open.
    Users,
    /// uid 0 has `root_total` open.
    Root,
}

/// Open connections by uid.
#[derive(Debug, Default)]
pub struct ConnCounts {
    by_uid: HashMap<u32, usize>,
    users: usize,
    root: usize,
}

impl ConnCounts {
    /// Counts a new connection of `uid`, or says which limit it would break (nothing counted).
    pub fn admit(&mut self, limits: &Limits, uid: u32) -> Result<Class, Refusal> {
        let class = Class::of(uid);
        match class {
            Class::Root if self.root >= limits.root_total => return Err(Refusal::Root),
            Class::Root => self.root += 1,
            Class::User => {
                let mine = self.by_uid.get(&uid).copied().unwrap_or(0);
                if mine >= limits.per_uid {
                    return Err(Refusal::Uid);
                }
                if self.users >= limits.users_total {
                    return Err(Refusal::Users);
                }
                self.users += 1;
                *self.by_uid.entry(uid).or_default() += 1;
            }
        }
        Ok(class)
    }

    /// A connection of `uid` that [`admit`](Self::admit) counted is closed.
    pub fn release(&mut self, uid: u32) {
        match Class::of(uid) {
            Class::Root => self.root = self.root.saturating_sub(1),
            Class::User => {
                if let Some(n) = self.by_uid.get_mut(&uid) {
                    *n -= 1;
                    self.users = self.users.saturating_sub(1);
                    if *n == 0 {
                        self.by_uid.remove(&uid);
                    }
                }
            }
        }
    }

    /// Open connections of `uid`.
    #[cfg(test)]
    pub fn of_uid(&self, uid: u32) -> usize {
        match Class::of(uid) {
            Class::Root => self.root,
            Class::User => self.by_uid.get(&uid).copied().unwrap_or(0),
        }
    }
}

/// What a connection's bytes so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// No newline yet, and still under the limit.
    More,
    /// The request line, without its newline (what follows it is ignored: one request per
    /// connection).
    Line(Vec<u8>),
    /// `max` bytes and no newline among them.
    TooLong,
}

/// Collects one request line from the pieces a nonblocking socket gives, never holding more
/// than `max` bytes.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    max: usize,
}

impl Framer {
    pub fn new(max: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            max,
        }
    }

    pub fn push(&mut self, data: &[u8]) -> Framed {
        let room = self.max - self.buf.len();
        let take = &data[..data.len().min(room)];
        if let Some(end) = take.iter().position(|&b| b == b'\n') {
            self.buf.extend_from_slice(&take[..end]);
            return Framed::Line(std::mem::take(&mut self.buf));
        }
        self.buf.extend_from_slice(take);
        if self.buf.len() >= self.max {
            self.buf = Vec::new();
            Framed::TooLong
        } else {
            Framed::More
        }
    }
}

/// Complete requests waiting for a worker: root's are always taken first, and at most
/// `user_slots` non-root requests run at once, so the other workers are root's whatever
/// non-root peers send (and however long their requests take).
pub struct JobQueue<T> {
    inner: Mutex<Queues<T>>,
    wake: Condvar,
    user_slots: usize,
}

struct Queues<T> {
    root: VecDeque<T>,
    user: VecDeque<T>,
    users_running: usize,
    closed: bool,
}

impl<T> JobQueue<T> {
    pub fn new(user_slots: usize) -> JobQueue<T> {
        JobQueue {
            inner: Mutex::new(Queues {
                root: VecDeque::new(),
                user: VecDeque::new(),
                users_running: 0,
                closed: false,
            }),
            wake: Condvar::new(),
            user_slots,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, class: Class, job: T) {
        let mut q = self.lock();
        match class {
            Class::Root => q.root.push_back(job),
            Class::User => q.user.push_back(job),
        }
        drop(q);
        self.wake.notify_all();
    }

    /// The next job a worker may run, waiting for one; None once closed. A `User` job must be
    /// followed by [`done`](Self::done) when it has finished.
    pub fn take(&self) -> Option<(Class, T)> {
        let mut q = self.lock();
        loop {
            if q.closed {
                return None;
            }
            if let Some(job) = q.root.pop_front() {
                return Some((Class::Root, job));
            }
            if q.users_running < self.user_slots {
                if let Some(job) = q.user.pop_front() {
                    q.users_running += 1;
                    return Some((Class::User, job));
                }
            }
            q = self.wake.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Without waiting: [`take`](Self::take) if a job is ready now.
    #[cfg(test)]
    pub fn try_take(&self) -> Option<(Class, T)> {
        let mut q = self.lock();
        if let Some(job) = q.root.pop_front() {
            return Some((Class::Root, job));
        }
        if q.users_running < self.user_slots {
            let job = q.user.pop_front()?;
            q.users_running += 1;
            return Some((Class::User, job));
        }
        None
    }

    /// A job taken as `class` has finished.
    pub fn done(&self, class: Class) {
        if class == Class::User {
            let mut q = self.lock();
            q.users_running = q.users_running.saturating_sub(1);
            drop(q);
            self.wake.notify_all();
        }
    }

    /// Workers waiting in `take` return None; queued jobs are dropped.
    pub fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.root.clear();
        q.user.clear();
        drop(q);
        self.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_uid: usize, users_total: usize, root_total: usize) -> Limits {
        Limits {
            per_uid,
            users_total,
            root_total,
            ..Limits::default()
        }
    }

    #[test]
    fn one_uid_is_capped_and_others_still_get_in() {
        let l = limits(2, 10, 1);
        let mut c = ConnCounts::default();
        assert_eq!(c.admit(&l, 1000), Ok(Class::User));
        assert_eq!(c.admit(&l, 1000), Ok(Class::User));
        assert_eq!(c.admit(&l, 1000), Err(Refusal::Uid));
        assert_eq!(c.admit(&l, 1001), Ok(Class::User));
        assert_eq!(c.of_uid(1000), 2);
        c.release(1000);
        assert_eq!(c.admit(&l, 1000), Ok(Class::User));
        assert_eq!(c.admit(&l, 1000), Err(Refusal::Uid));
    }

    #[test]
    fn users_together_are_capped_but_never_root() {
        let l = limits(2, 3, 2);
        let mut c = ConnCounts::default();
        for uid in [1, 2, 3] {
            assert_eq!(c.admit(&l, uid), Ok(Class::User));
        }
        assert_eq!(c.admit(&l, 4), Err(Refusal::Users));
        assert_eq!(c.admit(&l, 0), Ok(Class::Root));
        assert_eq!(c.admit(&l, 0), Ok(Class::Root));
        assert_eq!(c.admit(&l, 0), Err(Refusal::Root));
        c.release(0);
        assert_eq!(c.admit(&l, 0), Ok(Class::Root));
        c.release(2);
        assert_eq!(c.admit(&l, 4), Ok(Class::User));
        assert_eq!(c.of_uid(2), 0);
        assert!(!c.by_uid.contains_key(&2), "an idle uid is forgotten");
    }

    #[test]
    fn releasing_an_uncounted_uid_changes_nothing() {
        let l = limits(1, 1, 1);
        let mut c = ConnCounts::default();
        c.release(5);
        c.release(0);
        assert_eq!(c.admit(&l, 5), Ok(Class::User));
        assert_eq!(c.admit(&l, 0), Ok(Class::Root));
    }

    #[test]
    fn framer_joins_pieces_into_one_line() {
        let mut f = Framer::new(64);
        assert_eq!(f.push(b"{\"op\":"), Framed::More);
        assert_eq!(f.push(b"\"ping\"}"), Framed::More);
        assert_eq!(
            f.push(b"\nignored after the newline"),
            Framed::Line(b"{\"op\":\"ping\"}".to_vec())
        );
    }

    #[test]
    fn framer_refuses_at_the_limit_without_holding_more() {
        let mut f = Framer::new(8);
        assert_eq!(f.push(b"1234567"), Framed::More);
        assert_eq!(f.push(b"89\n"), Framed::TooLong);
        let mut f = Framer::new(8);
        assert_eq!(f.push(&[b'x'; 100]), Framed::TooLong);
        // A newline within the limit, even in a piece that goes past it, ends the line.
        let mut f = Framer::new(8);
        assert_eq!(
            f.push(b"1234567\nxxxxxxxx"),
            Framed::Line(b"1234567".to_vec())
        );
        // The newline itself is the 9th byte: over the limit.
        let mut f = Framer::new(8);
        assert_eq!(f.push(b"12345678\n"), Framed::TooLong);
    }

    #[test]
    fn root_jobs_go_first_and_users_never_take_every_worker() {
        let q = JobQueue::new(2);
        for i in 0..4 {
            q.push(Class::User, i);
        }
        assert_eq!(q.try_take(), Some((Class::User, 0)));
        q.push(Class::Root, 100);
        assert_eq!(q.try_take(), Some((Class::Root, 100)));
        assert_eq!(q.try_take(), Some((Class::User, 1)));
        // Two user jobs run: the third waits, however many workers are free.
        assert_eq!(q.try_take(), None);
        q.push(Class::Root, 101);
        assert_eq!(q.try_take(), Some((Class::Root, 101)));
        q.done(Class::Root);
        assert_eq!(q.try_take(), None);
        q.done(Class::User);
        assert_eq!(q.try_take(), Some((Class::User, 2)));
    }

    #[test]
    fn a_waiting_worker_wakes_for_a_root_job_and_on_close() {
        let q = std::sync::Arc::new(JobQueue::new(0));
        q.push(Class::User, 1);
        let w = {
            let q = q.clone();
            std::thread::spawn(move || q.take())
        };
        std::thread::sleep(Duration::from_millis(50));
        q.push(Class::Root, 2);
        assert_eq!(w.join().unwrap(), Some((Class::Root, 2)));
        let w = {
            let q = q.clone();
            std::thread::spawn(move || q.take())
        };
        std::thread::sleep(Duration::from_millis(50));
        q.close();
        assert_eq!(w.join().unwrap(), None);
    }
}
