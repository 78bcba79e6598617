//! Links the unwinder into the clock library statically (gcc's `libgcc_eh.a`) instead of
//! depending on `libgcc_s.so.1`.
//!
//! The library is loaded into every process of a sandbox, so what it costs at load time is paid
//! on every exec. libgcc_s's constructor (`__cpu_indicator_init`) runs a series of CPUID
//! instructions, and in a virtual machine each one exits to the hypervisor (about 4.5 µs here):
//! measured on this project's machines, loading libgcc_s alone made an exec of /bin/true
//! about 200 µs slower (820 µs native). Rust's std asks for `-lgcc_s`; a `libgcc_s.a` that is a copy
//! of `libgcc_eh.a`, found first on the library search path, satisfies that request statically.
//! The unwinder's symbols stay local to the library (rustc exports only its `#[no_mangle]` items).
//!
//! Where gcc has no `libgcc_eh.a` (or the target is not linux-gnu) nothing changes: the library
//! then needs libgcc_s.so.1 as before, and the build says so.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.ends_with("-linux-gnu") {
        return;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let found = Command::new(&cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        // gcc prints the bare name when it has no such file.
        .filter(|p| p.is_absolute() && p.is_file());
    let Some(eh) = found else {
        println!(
            "cargo:warning=no libgcc_eh.a from `{cc} -print-file-name`: libtimens_preload.so \
             will need libgcc_s.so.1, which makes every exec in a sandbox slower"
        );
        return;
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = out.join("static-unwind");
    std::fs::create_dir_all(&dir).expect("create OUT_DIR/static-unwind");
    std::fs::copy(&eh, dir.join("libgcc_s.a")).expect("copy libgcc_eh.a");
    println!("cargo:rerun-if-changed={}", eh.display());
    println!("cargo:rustc-link-search=native={}", dir.display());
}
