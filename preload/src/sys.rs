//! The raw mechanisms under the interposers: system calls made without libc, errno, the real
//! functions found with `dlsym(RTLD_NEXT)`, and the debug channel on fd 2.
//!
//! Why raw system calls: this library exports `syscall` itself, so `libc::syscall` from inside it
//! would call back into the interposer. Every fallback ("a call before init or from a signal
//! handler during init") and every forwarded `syscall()` goes through [`raw`], the same
//! instruction glibc's `syscall()` executes.

use std::ffi::{c_char, c_long, c_void, CStr};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

#[cfg(not(target_arch = "x86_64"))]
compile_error!("timens-preload is written for x86_64 Linux (raw syscalls, variadic syscall() ABI)");

/// One system call, six arguments; returns the kernel's result: a negative errno on failure.
///
/// # Safety
/// The arguments must be valid for system call `n` (pointers to memory it may read or write).
#[inline(always)]
pub unsafe fn raw(n: c_long, a: [c_long; 6]) -> c_long {
    let ret: c_long;
    // SAFETY: the x86_64 Linux system call convention (number and result in rax, arguments in
    // rdi, rsi, rdx, r10, r8, r9; rcx and r11 clobbered); no stack use. What the call does with
    // its arguments is the caller's contract.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") n => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Whether a raw result is an error (`-4095..=-1`), as glibc decides it.
pub fn is_err(r: c_long) -> bool {
    (-4095..0).contains(&r)
}

pub fn set_errno(e: i32) {
    // SAFETY: __errno_location returns the calling thread's errno slot, always valid.
    unsafe { *libc::__errno_location() = e };
}

/// A raw result turned into `syscall()`'s convention: -1 with errno set, else the value.
pub fn to_libc(r: c_long) -> c_long {
    if is_err(r) {
        set_errno((-r) as i32);
        -1
    } else {
        r
    }
}

/// A raw result turned into the convention of functions returning an `int` and setting errno.
pub fn to_libc_int(r: c_long) -> i32 {
    to_libc(r) as i32
}

/// `Real::ptr` once dlsym found nothing (NULL means "not looked up yet").
const NOT_FOUND: *mut c_void = usize::MAX as *mut c_void;

/// The next definition of a libc function after this library (`dlsym(RTLD_NEXT, name)`),
/// looked up the first time it is needed and read lock-free afterwards. `F` is the function's
/// pointer type.
pub struct Real<F> {
    name: &'static CStr,
    /// For symbols with several versions: the one to bind (dlsym may return an old compat
    /// version, e.g. the pre-2.3.2 `pthread_cond_timedwait` with another condvar layout).
    version: Option<&'static CStr>,
    ptr: AtomicPtr<c_void>,
    _f: PhantomData<F>,
}

// SAFETY: only an atomic pointer and a static name are shared; `F` is a plain fn-pointer type
// that is never stored as such.
unsafe impl<F> Sync for Real<F> {}

impl<F: Copy> Real<F> {
    pub const fn new(name: &'static CStr) -> Real<F> {
        Real {
            name,
            version: None,
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            _f: PhantomData,
        }
    }

    pub const fn versioned(name: &'static CStr, version: &'static CStr) -> Real<F> {
        Real {
            name,
            version: Some(version),
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            _f: PhantomData,
        }
    }

    /// Looks the symbol up with dlsym (which may lock and allocate): on the first call that
    /// needs it, not at load, because most processes never call most wrapped functions and
    /// each lookup costs every exec in a sandbox. Threads that race here all store the same
    /// answer.
    #[cold]
    #[inline(never)]
    fn resolve(&self) {
        let mut p = std::ptr::null_mut();
        if let Some(v) = self.version {
            // SAFETY: dlvsym with RTLD_NEXT and NUL-terminated strings; NULL if not found.
            p = unsafe { libc::dlvsym(libc::RTLD_NEXT, self.name.as_ptr(), v.as_ptr()) };
        }
        if p.is_null() {
            // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name; NULL if not found.
            p = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) };
        }
        if p.is_null() {
            p = NOT_FOUND;
        }
        self.ptr.store(p, Ordering::Release);
    }

    /// The real function if an earlier call already looked it up; never calls dlsym (for the
    /// clock path, where only a load and a jump are affordable).
    #[inline(always)]
    pub fn resolved(&self) -> Option<F> {
        if size_of::<F>() != size_of::<*mut c_void>() {
            return None;
        }
        let p = self.ptr.load(Ordering::Acquire);
        if p.is_null() || p == NOT_FOUND {
            return None;
        }
        // SAFETY: every `Real<F>` in this crate names a libc function whose C prototype is
        // exactly `F` (an `unsafe extern fn` pointer type, same size as a data pointer on
        // x86_64, checked above), and `p` is that function's address as dlsym returned it.
        Some(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
    }

    /// The real function (looked up on first use), or None if libc lacks it.
    #[inline(always)]
    pub fn get(&self) -> Option<F> {
        if self.ptr.load(Ordering::Acquire).is_null() {
            self.resolve();
        }
        self.resolved()
    }
}

static DEBUG: AtomicBool = AtomicBool::new(false);

extern "C" {
    /// libc's environment, as `getenv` reads it.
    static environ: *const *const c_char;
}

/// Turns the debug channel on when `TIMENS_PRELOAD_DEBUG=1`. Called during init. Reads
/// `environ` itself rather than calling getenv, whose code page in libc would be one more page
/// fault at every exec in a sandbox.
pub fn init_debug() {
    const NAME: &[u8] = b"TIMENS_PRELOAD_DEBUG=";
    // SAFETY: `environ` is libc's NULL-terminated array of NUL-terminated strings; init runs in
    // the constructor, before main can change it, and only reads it.
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let entry = (*p).cast::<u8>();
            // Compared byte by byte: a shorter entry ends (NUL) before any mismatch is read past.
            if (0..NAME.len()).all(|i| *entry.add(i) == NAME[i]) {
                let value = entry.add(NAME.len());
                DEBUG.store(*value == b'1' && *value.add(1) == 0, Ordering::Relaxed);
                return;
            }
            p = p.add(1);
        }
    }
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// A piece of a debug message: text or a number. Formatting needs no allocation, so messages
/// can be written from anywhere, also from a signal handler.
pub enum Part<'a> {
    S(&'a [u8]),
    I(i64),
}

/// Writes `timens-preload: <parts>\n` to fd 2 when debugging is on; otherwise nothing.
pub fn debug(parts: &[Part<'_>]) {
    if !debug_enabled() {
        return;
    }
    let mut buf = [0u8; 256];
    let mut len = 0;
    let mut put = |b: &[u8]| {
        for &c in b {
            if len < buf.len() - 1 {
                buf[len] = c;
                len += 1;
            }
        }
    };
    put(b"timens-preload: ");
    for p in parts {
        match p {
            Part::S(s) => put(s),
            Part::I(v) => {
                if *v < 0 {
                    put(b"-");
                }
                let mut digits = [0u8; 20];
                put(decimal(v.unsigned_abs(), &mut digits));
            }
        }
    }
    put(b"\n");
    // SAFETY: write(2) of a buffer we own; the result is ignored (nothing to do on failure).
    unsafe {
        raw(
            libc::SYS_write,
            [2, buf.as_ptr() as c_long, len as c_long, 0, 0, 0],
        )
    };
}

/// `n` in decimal, written at the end of `digits`. No allocation (signal handlers use it).
pub fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[i..]
}

/// Calls `line` for every line of a file read with raw syscalls through a fixed buffer; lines
/// longer than 255 bytes are cut. No allocation. Stops when `line` returns `Some`.
pub fn scan_lines<T>(path: &CStr, mut line: impl FnMut(&[u8]) -> Option<T>) -> Option<T> {
    // SAFETY: as in `read_small_file`.
    let fd = unsafe {
        raw(
            libc::SYS_openat,
            [
                libc::AT_FDCWD as c_long,
                path.as_ptr() as c_long,
                (libc::O_RDONLY | libc::O_CLOEXEC) as c_long,
                0,
                0,
                0,
            ],
        )
    };
    if is_err(fd) {
        return None;
    }
    let mut chunk = [0u8; 1024];
    let mut cur = [0u8; 256];
    let mut cur_len = 0;
    let mut result = None;
    'read: loop {
        // SAFETY: read into a buffer we own.
        let n = unsafe {
            raw(
                libc::SYS_read,
                [
                    fd,
                    chunk.as_mut_ptr() as c_long,
                    chunk.len() as c_long,
                    0,
                    0,
                    0,
                ],
            )
        };
        if n == -(libc::EINTR as c_long) {
            continue;
        }
        if is_err(n) || n == 0 {
            if cur_len > 0 {
                result = line(&cur[..cur_len]);
            }
            break;
        }
        for &b in chunk.iter().take(n as usize) {
            if b == b'\n' {
                if let Some(r) = line(&cur[..cur_len]) {
                    result = Some(r);
                    break 'read;
                }
                cur_len = 0;
            } else if cur_len < cur.len() {
                cur[cur_len] = b;
                cur_len += 1;
            }
        }
    }
    // SAFETY: close the fd opened above.
    unsafe { raw(libc::SYS_close, [fd, 0, 0, 0, 0, 0]) };
    result
}

/// Writes `prefix` followed by the decimal `n` and a NUL into `buf`; returns the C string.
pub fn path_with_number<'a>(buf: &'a mut [u8; 64], prefix: &[u8], n: u64) -> Option<&'a CStr> {
    let mut digits = [0u8; 20];
    let number = decimal(n, &mut digits);
    let total = prefix.len() + number.len();
    if total + 1 > buf.len() {
        return None;
    }
    buf[..prefix.len()].copy_from_slice(prefix);
    buf[prefix.len()..total].copy_from_slice(number);
    buf[total] = 0;
    CStr::from_bytes_with_nul(&buf[..=total]).ok()
}
