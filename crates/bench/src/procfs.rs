//! What the kernel says about a process: CPU time used (utime + stime from
//! `/proc/PID/stat`), resident memory (VmRSS from `/proc/PID/status`), and per thread its
//! run time and how often it was scheduled (`/proc/PID/task/TID/schedstat`).
use std::collections::BTreeMap;

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

/// One thread's name, CPU time (ns) and how many times it was scheduled in (each wake-up
/// is at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadCpu {
    pub name: String,
    pub run_ns: u64,
    pub runs: u64,
}

/// Every thread of `pid`, by thread id; a thread that ends while it is read is left out.
///
/// # Errors
/// When the process is gone.
pub fn threads(pid: u32) -> anyhow::Result<BTreeMap<u32, ThreadCpu>> {
    let dir = format!("/proc/{pid}/task");
    let mut threads = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {dir}"))? {
        let path = entry?.path();
        let Some(tid) = path.file_name().and_then(|n| n.to_str()?.parse().ok()) else {
            continue;
        };
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("schedstat")),
        ) else {
            continue;
        };
        if let Some((run_ns, runs)) = parse_schedstat(&stat) {
            let name = name.trim().to_owned();
            threads.insert(tid, ThreadCpu { name, run_ns, runs });
        }
    }
    Ok(threads)
}

/// `run_ns wait_ns runs` (the time on a CPU, waiting for one, and the times scheduled in).
fn parse_schedstat(stat: &str) -> Option<(u64, u64)> {
    let mut fields = stat.split_whitespace();
    let run_ns = fields.next()?.parse().ok()?;
    let runs = fields.nth(1)?.parse().ok()?;
    Some((run_ns, runs))
}

/// What each thread name did between two `threads` readings: (name, runs, CPU ns), the
/// threads that ran at all, most runs first. A thread started in between counts whole.
pub fn woken(
    before: &BTreeMap<u32, ThreadCpu>,
    after: &BTreeMap<u32, ThreadCpu>,
) -> Vec<(String, u64, u64)> {
    let mut by_name: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (tid, now) in after {
        let (runs, run_ns) = before.get(tid).map_or((0, 0), |b| (b.runs, b.run_ns));
        let runs = now.runs.saturating_sub(runs);
        if runs > 0 {
            let sum = by_name.entry(&now.name).or_default();
            sum.0 += runs;
            sum.1 += now.run_ns.saturating_sub(run_ns);
        }
    }
    let mut woken: Vec<_> = by_name
        .into_iter()
        .map(|(name, (runs, ns))| (name.to_owned(), runs, ns))
        .collect();
    woken.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    woken
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
    fn wake_ups_are_counted_per_thread_name_between_two_readings() {
        assert_eq!(parse_schedstat("977921 215019 12\n"), Some((977_921, 12)));
        assert_eq!(parse_schedstat("1 2"), None);
        let t = |name: &str, run_ns, runs| ThreadCpu {
            name: name.into(),
            run_ns,
            runs,
        };
        let before = BTreeMap::from([(1, t("main", 100, 5)), (2, t("worker", 10, 1))]);
        let after = BTreeMap::from([
            (1, t("main", 100, 5)),
            (2, t("worker", 40, 3)),
            (3, t("worker", 5, 1)),
        ]);
        assert_eq!(woken(&before, &after), [("worker".to_owned(), 3, 35)]);
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
        let threads = threads(pid).expect("threads");
        assert!(threads.contains_key(&pid), "{threads:?}");
    }
}
