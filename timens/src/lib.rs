//! The time-namespace model with the kernel's rules, and the shared-memory offset store.
//!
//! Rule numbers refer to `../shared/spec/timens-semantics.md`.

pub mod store;
pub mod write;

pub use procview::{Clock, Offsets, Timespec};

/// `PROC_TIME_INIT_INO`: the inode number of the initial time namespace (G2).
pub const INIT_TIME_INUM: u32 = 0xEFFF_FFFA;

/// Inode numbers handed to emulated namespaces: slot `i` gets `INUM_BASE + i`. The kernel's
/// dynamic range starts at 0xF000_0000 and is allocated from the bottom, so numbers this high are
/// in the kernel's range (they look like real ones) without colliding in practice.
pub const INUM_BASE: u32 = 0xF800_0000;
