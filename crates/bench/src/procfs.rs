//! What the kernel says about a process: CPU time used (utime + stime from
//! `/proc/PID/stat`) and resident memory (VmRSS from `/proc/PID/status`).
use anyhow::Context;

/// utime + stime of `pid`, in clock ticks.
///
/// # Errors
/// When the process is gone or the file cannot be read.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    parse_stat_ticks(&stat).context("unexpected /proc/PID/stat format")
}

/// Fields 14 and 15 (utime, stime), counted after the `(comm)` field, which may itself
/// contain spaces and parentheses.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // after_comm starts at field 3 (state); utime is field 14, i.e. index 11 here.
    let mut fields = after_comm.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS of `pid`, in KiB.
///
/// # Errors
/// When the process is gone or has no VmRSS line.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    parse_rss_kib(&status).context("no VmRSS line in /proc/PID/status")
}

fn parse_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when that is unavailable).
pub fn ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&hz| hz > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_a_command_name_with_spaces() {
        let stat = "4242 (pi cloud) (x) S 1 4242 4242 0 -1 4194560 900 0 0 0 17 5 0 0 20 0 9 0 123 456 789";
        assert_eq!(parse_stat_ticks(stat), Some(22));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tpicloud\nVmPeak:\t  99999 kB\nVmRSS:\t   21504 kB\nThreads:\t9\n";
        assert_eq!(parse_rss_kib(status), Some(21_504));
        assert_eq!(parse_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_resident_memory() {
        let pid = std::process::id();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1, "keep the loop");
        assert!(rss_kib(pid).expect("rss") > 0);
        assert!(cpu_ticks(pid).is_ok());
        assert!(ticks_per_sec() >= 1);
    }
}
