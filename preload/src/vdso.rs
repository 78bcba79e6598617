//! The vDSO's own `clock_gettime`, looked up at init in the image the kernel maps into every
//! process (`AT_SYSINFO_EHDR`), so that the interposed `clock_gettime` calls it directly rather
//! than through libc's wrapper, which would only call it in turn: the interposer then costs one
//! call level like libc's own, plus the shift. Where it cannot be found (no vDSO, no `DT_HASH`,
//! an unexpected layout) the library keeps calling libc's `clock_gettime`.
//!
//! The lookup reads the ELF image in memory: the first `PT_LOAD` gives the load bias, `PT_DYNAMIC`
//! the symbol and string tables and `DT_HASH` (whose chain count is the number of symbols). No
//! allocation, no system call.

use std::ffi::c_int;
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{clockid_t, timespec};

pub type ClockGettime = unsafe extern "C" fn(clockid_t, *mut timespec) -> c_int;

/// The address of `__vdso_clock_gettime`, or 0.
static CLOCK_GETTIME: AtomicUsize = AtomicUsize::new(0);

/// The vDSO's `clock_gettime`: 0 or a negative errno (it makes the system call itself for
/// clocks it cannot read in user space).
#[inline(always)]
pub fn clock_gettime() -> Option<ClockGettime> {
    let p = CLOCK_GETTIME.load(Ordering::Relaxed);
    if p == 0 {
        return None;
    }
    // SAFETY: a non-zero value is the address of the vDSO's `__vdso_clock_gettime`, whose C
    // signature is `int (clockid_t, struct timespec *)`; the vDSO stays mapped for the life of
    // the process image.
    Some(unsafe { std::mem::transmute::<usize, ClockGettime>(p) })
}

/// Looks the function up; part of init.
pub fn resolve() {
    // SAFETY: getauxval only reads the auxiliary vector.
    let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
    if base == 0 {
        return;
    }
    // SAFETY: AT_SYSINFO_EHDR is the address of the vDSO's ELF header, mapped readable by the
    // kernel for the whole life of the process; `lookup` reads only inside that image, at
    // offsets its own headers give.
    if let Some(addr) = unsafe { lookup(base, b"__vdso_clock_gettime") } {
        CLOCK_GETTIME.store(addr, Ordering::Relaxed);
    }
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: i64 = 0;
const DT_HASH: i64 = 4;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const STT_FUNC: u8 = 2;
const SHN_UNDEF: u16 = 0;

#[repr(C)]
struct Ehdr {
    ident: [u8; 16],
    kind: u16,
    machine: u16,
    version: u32,
    entry: u64,
    phoff: u64,
    shoff: u64,
    flags: u32,
    ehsize: u16,
    phentsize: u16,
    phnum: u16,
    shentsize: u16,
    shnum: u16,
    shstrndx: u16,
}

#[repr(C)]
struct Phdr {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

#[repr(C)]
struct Dyn {
    tag: i64,
    val: u64,
}

#[repr(C)]
struct Sym {
    name: u32,
    info: u8,
    other: u8,
    shndx: u16,
    value: u64,
    size: u64,
}

/// The address of the defined function `name` in the 64-bit ELF image mapped at `base`.
///
/// # Safety
/// `base` must be the address of a mapped, well-formed ELF image (the vDSO).
unsafe fn lookup(base: usize, name: &[u8]) -> Option<usize> {
    // SAFETY (whole body): the caller guarantees a well-formed image at `base`; every address
    // read below is derived from that image's own headers.
    unsafe {
        let eh = &*(base as *const Ehdr);
        if eh.ident[..4] != *b"\x7fELF"
            || eh.ident[4] != 2
            || usize::from(eh.phentsize) != std::mem::size_of::<Phdr>()
        {
            return None;
        }
        let phdrs = std::slice::from_raw_parts(
            (base + eh.phoff as usize) as *const Phdr,
            usize::from(eh.phnum),
        );
        let load = phdrs.iter().find(|p| p.kind == PT_LOAD)?;
        let bias = base
            .wrapping_add(load.offset as usize)
            .wrapping_sub(load.vaddr as usize);
        let dynamic = phdrs.iter().find(|p| p.kind == PT_DYNAMIC)?;
        let (mut symtab, mut strtab, mut hash) = (0usize, 0usize, 0usize);
        let mut d = bias.wrapping_add(dynamic.vaddr as usize) as *const Dyn;
        while (*d).tag != DT_NULL {
            let at = bias.wrapping_add((*d).val as usize);
            match (*d).tag {
                DT_SYMTAB => symtab = at,
                DT_STRTAB => strtab = at,
                DT_HASH => hash = at,
                _ => {}
            }
            d = d.add(1);
        }
        if symtab == 0 || strtab == 0 || hash == 0 {
            return None;
        }
        // DT_HASH: nbucket, nchain, ...; nchain is the number of symbol table entries.
        let count = *(hash as *const u32).add(1) as usize;
        let syms = std::slice::from_raw_parts(symtab as *const Sym, count);
        syms.iter()
            .find(|s| {
                s.info & 0xf == STT_FUNC
                    && s.shndx != SHN_UNDEF
                    && std::ffi::CStr::from_ptr((strtab + s.name as usize) as *const _).to_bytes()
                        == name
            })
            .map(|s| bias.wrapping_add(s.value as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The function found is the vDSO's: it reads the same clock as libc, and reports an
    /// invalid clock as a negative errno.
    #[test]
    fn finds_the_vdso_clock_gettime() {
        resolve();
        let f = clock_gettime().expect("this machine's vDSO has __vdso_clock_gettime");
        let mut a = timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let (mut b, mut c, mut bad) = (a, a, a);
        // SAFETY: valid timespec pointers.
        unsafe {
            assert_eq!(libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut a), 0);
            assert_eq!(f(libc::CLOCK_MONOTONIC, &mut b), 0);
            assert_eq!(libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut c), 0);
            assert_eq!(f(12345, &mut bad), -libc::EINVAL);
        }
        let ns = |t: &timespec| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
        let (a, b, c) = (ns(&a), ns(&b), ns(&c));
        assert!(a <= b && b <= c, "libc {a}, vDSO {b}, libc {c}");
    }
}
