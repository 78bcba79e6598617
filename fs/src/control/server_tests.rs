//! The server against real sockets, with a handler that needs no daemon. The test process's
//! connections are root's when run as root, another uid's otherwise: the limits are set the
//! same for both.

use super::*;
use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::AtomicU32;

/// A server on a socket of its own, run on a thread, stopped and removed on drop.
struct Running {
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn tight() -> Limits {
    Limits {
        per_uid: 3,
        users_total: 3,
        root_total: 3,
        request_max: 1024,
        fds_max: 2,
        user_deadline: Duration::from_millis(300),
        root_deadline: Duration::from_millis(300),
        answer_deadline: Duration::from_secs(2),
        workers: 2,
        user_workers: 1,
    }
}

/// Pings are answered with the number of fds the request carried as the version.
fn start(limits: Limits) -> Running {
    let path = std::env::temp_dir().join(format!(
        "timensfs-control-{}-{}.sock",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let handler: Arc<Handler> = Arc::new(|peer: Peer, req, fds: Vec<OwnedFd>| match req {
        Request::Ping => Response::Pong {
            pid: peer.pid,
            version: fds.len().to_string(),
        }
        .into(),
        _ => error(libc::ENOSYS, "not in this test").into(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut server = Server::start(listener, limits, handler).unwrap();
            server.run(&stop).unwrap();
        })
    };
    Running {
        path,
        stop,
        thread: Some(thread),
    }
}

fn connect(r: &Running) -> UnixStream {
    let s = UnixStream::connect(&r.path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn ping(r: &Running) -> Response {
    timens_proto::call(&connect(r), &Request::Ping, &[]).unwrap()
}

/// What the server sends before closing: its lines, and whether it closed (EOF or reset).
fn rest(s: &UnixStream) -> (Vec<Response>, bool) {
    let mut text = Vec::new();
    let closed = match (&*s).read_to_end(&mut text) {
        Ok(_) => true,
        Err(e) => e.raw_os_error() == Some(libc::ECONNRESET),
    };
    let lines = BufReader::new(&text[..])
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    (lines, closed)
}

fn errno_of(resp: &Response) -> Option<i32> {
    match resp {
        Response::Error { errno, .. } => Some(*errno),
        _ => None,
    }
}

#[test]
fn answers_a_ping_with_its_fds_and_the_peer_from_the_kernel() {
    let r = start(tight());
    let (a, b) = UnixStream::pair().unwrap();
    let resp = timens_proto::call(&connect(&r), &Request::Ping, &[a.as_fd(), b.as_fd()]).unwrap();
    assert_eq!(
        resp,
        Response::Pong {
            pid: std::process::id(),
            version: "2".into()
        }
    );
}

#[test]
fn an_oversized_request_is_refused_and_the_next_one_answered() {
    let r = start(tight());
    let s = connect(&r);
    // Written from another thread: the server stops reading at its limit.
    let w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = (&w).write_all(&[b' '; 4096]);
    });
    let (lines, closed) = rest(&s);
    writer.join().unwrap();
    assert!(closed);
    assert_eq!(
        lines.iter().map(errno_of).collect::<Vec<_>>(),
        vec![Some(libc::EMSGSIZE)]
    );
    assert!(matches!(ping(&r), Response::Pong { .. }));
}

#[test]
fn too_many_fds_are_refused() {
    let r = start(tight());
    let (a, b) = UnixStream::pair().unwrap();
    let s = connect(&r);
    timens_sys::fdpass::send_with_fds(
        &s,
        b"{\"op\":\"ping\"}\n",
        &[a.as_fd(), b.as_fd(), a.as_fd()],
    )
    .unwrap();
    let (lines, closed) = rest(&s);
    assert!(closed);
    assert_eq!(
        lines.iter().map(errno_of).collect::<Vec<_>>(),
        vec![Some(libc::EINVAL)]
    );
}

#[test]
fn a_silent_connection_is_closed_after_the_deadline() {
    let r = start(tight());
    let s = connect(&r);
    (&s).write_all(b"{").unwrap();
    let t = Instant::now();
    let (lines, closed) = rest(&s);
    let took = t.elapsed();
    assert!(closed);
    assert_eq!(
        lines.iter().map(errno_of).collect::<Vec<_>>(),
        vec![Some(libc::ETIMEDOUT)]
    );
    assert!(took >= Duration::from_millis(200), "closed after {took:?}");
}

#[test]
fn connections_beyond_the_limit_are_refused_at_once_and_slots_come_back() {
    let r = start(Limits {
        user_deadline: Duration::from_secs(30),
        root_deadline: Duration::from_secs(30),
        ..tight()
    });
    let held: Vec<UnixStream> = (0..3).map(|_| connect(&r)).collect();
    for s in &held {
        (&*s).write_all(b"{").unwrap();
    }
    let extra = connect(&r);
    let (lines, closed) = rest(&extra);
    assert!(closed);
    assert_eq!(
        lines.iter().map(errno_of).collect::<Vec<_>>(),
        vec![Some(libc::EAGAIN)]
    );
    // A closed connection gives its slot back.
    drop(held);
    let mut answered = false;
    for _ in 0..100 {
        if matches!(ping(&r), Response::Pong { .. }) {
            answered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(answered, "no slot came back after the connections closed");
}

#[test]
fn bad_json_gets_einval() {
    let r = start(tight());
    let s = connect(&r);
    (&s).write_all(b"{\"op\":\"no such op\"}\n").unwrap();
    let (lines, _) = rest(&s);
    assert_eq!(
        lines.iter().map(errno_of).collect::<Vec<_>>(),
        vec![Some(libc::EINVAL)]
    );
}

#[test]
fn a_peer_that_does_not_read_its_answer_does_not_keep_a_worker() {
    let limits = Limits {
        answer_deadline: Duration::from_millis(300),
        workers: 1,
        ..tight()
    };
    let path =
        std::env::temp_dir().join(format!("timensfs-control-{}-big.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    // An answer far larger than a socket buffer.
    let handler: Arc<Handler> = Arc::new(|_, req, _| match req {
        Request::Status => error(0, "x".repeat(8 << 20)).into(),
        _ => Response::Pong {
            pid: 0,
            version: String::new(),
        }
        .into(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let r = Running {
        path: path.clone(),
        stop: stop.clone(),
        thread: Some(std::thread::spawn(move || {
            let mut server = Server::start(listener, limits, handler).unwrap();
            server.run(&stop).unwrap();
        })),
    };
    let greedy = connect(&r);
    (&greedy).write_all(b"{\"op\":\"status\"}\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // The only worker is writing to `greedy`, which reads nothing; it gives up in time.
    let t = Instant::now();
    assert!(matches!(ping(&r), Response::Pong { .. }));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    drop(greedy);
}
