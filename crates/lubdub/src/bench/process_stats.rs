//! What the server under test costs, read from `/proc/<pid>`: resident
//! memory, CPU time and its open-file limit. Parsing is separate from
//! reading so that it is tested on fixed text.

use std::io;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::limits::parse_soft_open_files;

/// One reading of a process's costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessSample {
    /// When it was read.
    pub at: Instant,
    /// Resident set size (`VmRSS`), bytes.
    pub rss_bytes: u64,
    /// CPU time of all its live threads, user and system.
    pub cpu: Duration,
}

/// A process whose costs are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Watched {
    /// Its process id.
    pub pid: u32,
}

impl Watched {
    /// Reads memory and CPU time now.
    ///
    /// CPU time is the sum of each thread's scheduler run time
    /// (`/proc/<pid>/task/*/schedstat`, nanoseconds) rather than `utime +
    /// stime` from `/proc/<pid>/stat`, which counts in 10 ms ticks: too coarse
    /// for an idle server, whose whole budget is a few ticks a second.
    ///
    /// # Errors
    /// The process is gone or `/proc` cannot be read.
    pub fn sample(self) -> io::Result<ProcessSample> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let rss_bytes = parse_vm_rss(&status).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/proc/{}/status has no VmRSS line", self.pid),
            )
        })?;
        let mut cpu = Duration::ZERO;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid))? {
            let path = task?.path().join("schedstat");
            // A thread may end between the listing and the read.
            if let Ok(text) = std::fs::read_to_string(path) {
                cpu += parse_schedstat_run_time(&text).unwrap_or_default();
            }
        }
        Ok(ProcessSample {
            at: Instant::now(),
            rss_bytes,
            cpu,
        })
    }

    /// The process's soft limit on open files.
    ///
    /// # Errors
    /// The process is gone, or its limits cannot be read.
    pub fn open_files_limit(self) -> io::Result<u64> {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid))?;
        parse_soft_open_files(&limits).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/proc/{}/limits has no open-files line", self.pid),
            )
        })
    }
}

/// `VmRSS` from the text of `/proc/<pid>/status`, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let mut fields = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => Some(value * 1024),
        _ => None,
    }
}

/// A thread's time on a CPU: the first field of `/proc/<pid>/task/<tid>/schedstat`.
pub fn parse_schedstat_run_time(schedstat: &str) -> Option<Duration> {
    let nanos = schedstat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tlubdub\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(5120 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn schedstat_run_time_is_the_first_field() {
        assert_eq!(
            parse_schedstat_run_time("819514 62980 2\n"),
            Some(Duration::from_nanos(819_514))
        );
        assert_eq!(parse_schedstat_run_time(""), None);
    }

    #[test]
    fn this_process_can_be_watched() {
        let me = Watched {
            pid: std::process::id(),
        };
        let first = me.sample().expect("own /proc entry");
        // Burn a little CPU so that the second reading must be larger.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let second = me.sample().expect("own /proc entry");
        assert!(first.rss_bytes > 0);
        assert!(second.cpu > first.cpu, "{first:?} then {second:?}");
        assert!(me.open_files_limit().expect("own limits") > 3);
    }
}
