//! How many sessions this process can hold open: its open-file limit minus
//! the descriptors already in use and a margin for the runtime's own.
//!
//! Read from `/proc/self/limits` and `/proc/self/fd` rather than through a
//! syscall crate: it needs no `unsafe`, adds no dependency to the server's
//! tree, and the benchmark only runs where `/proc` exists (Linux).

use std::io;

/// Descriptors kept free for everything that is not a session socket: the
/// runtime's epoll and wakers, stdio, a log file, a `/proc` read.
pub const MARGIN: u64 = 64;

/// The open-file budget of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct OpenFiles {
    /// Soft `RLIMIT_NOFILE`: the most descriptors the process may hold.
    pub limit: u64,
    /// Descriptors open now.
    pub in_use: u64,
}

impl OpenFiles {
    /// Reads the limit and counts the descriptors open now.
    ///
    /// # Errors
    /// When `/proc/self/limits` or `/proc/self/fd` cannot be read (not Linux,
    /// or `/proc` not mounted), or the limits file has no open-files line.
    pub fn of_this_process() -> io::Result<Self> {
        let limits = std::fs::read_to_string("/proc/self/limits")?;
        let limit = parse_soft_open_files(&limits).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "/proc/self/limits has no readable \"Max open files\" line",
            )
        })?;
        // The directory handle used for counting is itself one entry: harmless,
        // it only makes the count one too high.
        let in_use = std::fs::read_dir("/proc/self/fd")?.count() as u64;
        Ok(Self { limit, in_use })
    }

    /// Sessions (one socket each) that still fit, keeping [`MARGIN`] free.
    pub fn session_capacity(&self) -> u64 {
        self.limit
            .saturating_sub(self.in_use)
            .saturating_sub(MARGIN)
    }
}

/// The soft limit from the text of `/proc/<pid>/limits`; `u64::MAX` for
/// "unlimited", `None` when the line is missing or unreadable.
pub fn parse_soft_open_files(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    // Columns: name (three words), soft, hard, units.
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            20000                40000                files
Max locked memory         8388608              8388608              bytes
";

    #[test]
    fn the_soft_open_files_limit_is_read_from_its_column() {
        assert_eq!(parse_soft_open_files(LIMITS), Some(20_000));
    }

    #[test]
    fn unlimited_and_missing_lines_are_told_apart() {
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_soft_open_files(unlimited), Some(u64::MAX));
        assert_eq!(parse_soft_open_files("Max cpu time  1  1  seconds\n"), None);
    }

    #[test]
    fn capacity_keeps_the_margin_and_never_underflows() {
        let files = OpenFiles {
            limit: 20_000,
            in_use: 10,
        };
        assert_eq!(files.session_capacity(), 20_000 - 10 - MARGIN);
        let crowded = OpenFiles {
            limit: 50,
            in_use: 40,
        };
        assert_eq!(crowded.session_capacity(), 0);
    }

    #[test]
    fn this_process_has_a_readable_budget() {
        let files = OpenFiles::of_this_process().expect("tests run on Linux with /proc");
        assert!(files.in_use >= 3, "stdio at least: {files:?}");
        assert!(files.limit > files.in_use);
    }
}
