//! Where in a virtual `timens_offsets` file a FUSE write lands, as procfs would see it.
//!
//! procfs passes the handler the file position and never advances it on a `timens_offsets`
//! write (spec E1): every write on an fd that was only written to is at position 0. FUSE sends
//! writes at its own idea of the position, which differs in two ways:
//! - it advances the position by every count the daemon returns, so the daemon keeps, per open
//!   file, how far FUSE ran ahead (`phantom`) and subtracts it;
//! - with O_APPEND it sends every write at the inode's size, not at the file position (procfs
//!   ignores O_APPEND: `echo ... >> /proc/PID/timens_offsets` works on the kernel).
//!
//! Neither tells the daemon about an lseek: those cases stay the named differences of the
//! differential tests (`seek_after_write`, `append_after_read`).

/// The procfs position a write at FUSE `offset` stands for.
///
/// With `append` (O_APPEND in the write's file flags) the offset is the inode's size and says
/// nothing about the position: the write stands for 0, procfs's position of an fd that was only
/// written to.
pub fn write_position(offset: u64, phantom: u64, append: bool) -> u64 {
    if append {
        0
    } else if offset >= phantom {
        offset - phantom
    } else {
        offset
    }
}

/// `phantom` after a write of `n` bytes accepted at FUSE `offset`, standing for `pos`: FUSE's
/// position is now `offset + n`, procfs's still `pos`.
pub fn phantom_after_write(offset: u64, pos: u64, n: u64) -> u64 {
    offset.saturating_add(n).saturating_sub(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e1_writes_on_one_fd_all_stand_for_position_0() {
        // Two 15-byte writes: FUSE sends them at 0 and 15.
        let mut phantom = 0;
        let pos = write_position(0, phantom, false);
        assert_eq!(pos, 0);
        phantom = phantom_after_write(0, pos, 15);
        assert_eq!(write_position(15, phantom, false), 0);
        phantom = phantom_after_write(15, 0, 15);
        assert_eq!(phantom, 30);
        // A read of 64 bytes moved both positions: a write there is at 64 for procfs too.
        assert_eq!(write_position(30 + 64, phantom, false), 64);
        // lseek(fd, 5): below what FUSE ran ahead, taken as it is.
        assert_eq!(write_position(5, phantom, false), 5);
    }

    #[test]
    fn append_writes_stand_for_position_0() {
        // Found by the differential fuzz: O_WRONLY|O_APPEND, FUSE sends the write at the inode's
        // size (here 4096); the kernel's handler sees position 0 and accepts it.
        let pos = write_position(4096, 0, true);
        assert_eq!(pos, 0);
        // FUSE's position is now 4096 + 15: a read on this fd (O_RDWR|O_APPEND) comes there
        // and stands for 0, where procfs would read.
        let phantom = phantom_after_write(4096, pos, 15);
        assert_eq!(write_position(4096 + 15, phantom, false), 0);
        // A second append write, at whatever size the inode has then, is at 0 again.
        assert_eq!(write_position(15, phantom, true), 0);
    }
}
