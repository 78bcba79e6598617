//! proc-bench: the timing half of `bench/run.sh`.
//!
//! Two modes, each printing one line of `key=value` pairs the driver script parses:
//!
//! * `proc-bench [--reps R] [--warmup W] PATH ITERS`: times `open(PATH) + read(64 KiB) +
//!   close` ITERS times per repetition, R repetitions (default 5), after W untimed operations
//!   (default ITERS / 10). Every operation is timed on its own with CLOCK_MONOTONIC; each
//!   repetition yields the median of its operations and the figure printed as `median_ns` is
//!   the median of those repetition medians (robust against one noisy repetition).
//!   One `read` per open, as a program reading a small /proc file does (the buffer is larger
//!   than any of these files), so a FUSE file costs OPEN + READ + RELEASE.
//! * `proc-bench --cmd N [--warmup W] -- CMD ARGS...`: runs CMD N times (after W untimed runs,
//!   default 1) with stdin/stdout/stderr on /dev/null, waits for each, and prints the median
//!   wall time in milliseconds as `median_ms`. A run that does not exit 0 is an error.

use std::ffi::CString;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

const USAGE: &str = "usage: proc-bench [--reps R] [--warmup W] PATH ITERS\n       proc-bench --cmd N [--warmup W] -- CMD [ARGS...]";

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    let n = v.len();
    if n == 0 {
        0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

/// One open + read + close; returns the bytes read.
fn one_op(path: &CString, buf: &mut [u8]) -> Result<usize, String> {
    // SAFETY: `path` is a valid C string.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "open {}: {}",
            path.to_string_lossy(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `buf` is valid for writes of its length; `fd` is ours.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    if n < 0 {
        return Err(format!("read {}: {err}", path.to_string_lossy()));
    }
    Ok(n as usize)
}

fn bench_path(path: &str, iters: usize, reps: usize, warmup: usize) -> Result<(), String> {
    let cpath = CString::new(path).map_err(|_| "the path contains a NUL byte".to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0;
    for _ in 0..warmup.max(1) {
        bytes = one_op(&cpath, &mut buf)?;
    }
    if bytes == 0 {
        return Err(format!("{path}: read returned 0 bytes"));
    }
    let mut rep_medians = Vec::with_capacity(reps);
    let mut times = vec![0u64; iters];
    let wall = Instant::now();
    for _ in 0..reps {
        for t in times.iter_mut() {
            let t0 = now_ns();
            one_op(&cpath, &mut buf)?;
            *t = now_ns() - t0;
        }
        rep_medians.push(median(&mut times));
    }
    let total_ops = (iters * reps) as f64;
    let mean_ns = wall.elapsed().as_nanos() as f64 / total_ops;
    let shown: Vec<String> = rep_medians.iter().map(u64::to_string).collect();
    let med = median(&mut rep_medians.clone());
    println!(
        "mode=path path={path} bytes={bytes} iters={iters} reps={reps} median_ns={med} mean_ns={mean_ns:.0} rep_medians={}",
        shown.join(",")
    );
    Ok(())
}

fn bench_cmd(n: usize, warmup: usize, cmd: &[String]) -> Result<(), String> {
    let run = || -> Result<u64, String> {
        let t0 = Instant::now();
        let status = Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {}: {e}", cmd[0]))?;
        let ns = t0.elapsed().as_nanos() as u64;
        if !status.success() {
            return Err(format!("{} failed: {status}", cmd.join(" ")));
        }
        Ok(ns)
    };
    for _ in 0..warmup {
        run()?;
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        times.push(run()?);
    }
    let min = times.iter().copied().min().unwrap_or(0);
    let max = times.iter().copied().max().unwrap_or(0);
    let med = median(&mut times);
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "mode=cmd runs={n} median_ms={:.3} min_ms={:.3} max_ms={:.3} cmd={}",
        ms(med),
        ms(min),
        ms(max),
        cmd.join(" ")
    );
    Ok(())
}

fn parse_num(flag: &str, v: Option<&String>) -> Result<usize, String> {
    v.ok_or_else(|| format!("{flag} needs a value"))?
        .parse()
        .map_err(|_| format!("{flag}: not a number"))
}

fn real_main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut reps = 5;
    let mut warmup = None;
    let mut cmd_runs = None;
    let mut positional = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--reps" => {
                reps = parse_num("--reps", args.get(i + 1))?;
                i += 1;
            }
            "--warmup" => {
                warmup = Some(parse_num("--warmup", args.get(i + 1))?);
                i += 1;
            }
            "--cmd" => {
                cmd_runs = Some(parse_num("--cmd", args.get(i + 1))?);
                i += 1;
            }
            "--" => {
                positional.extend_from_slice(&args[i + 1..]);
                break;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            a if a.starts_with("--") => return Err(format!("unknown option {a}\n{USAGE}")),
            a => positional.push(a.to_string()),
        }
        i += 1;
    }
    match cmd_runs {
        Some(n) => {
            if positional.is_empty() || n == 0 {
                return Err(USAGE.to_string());
            }
            bench_cmd(n, warmup.unwrap_or(1), &positional)
        }
        None => {
            let [path, iters] = positional.as_slice() else {
                return Err(USAGE.to_string());
            };
            let iters: usize = iters
                .parse()
                .map_err(|_| format!("ITERS: not a number\n{USAGE}"))?;
            if iters == 0 || reps == 0 {
                return Err(USAGE.to_string());
            }
            bench_path(path, iters, reps, warmup.unwrap_or(iters / 10))
        }
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proc-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
