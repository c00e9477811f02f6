//! Instructions a process executes in user space while a load runs, counted by
//! `perf stat -e instructions:u -p PID` (Debian's linux-perf). Unlike requests/s, the
//! count hardly moves when other processes share the cores, so instructions per request
//! compare two servers even on a busy machine. Without perf (or when
//! `kernel.perf_event_paranoid` forbids it) the count is `None` and the table says so.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running `perf stat` on one process for a fixed time.
pub struct Counter {
    child: Child,
    out: PathBuf,
}

impl Counter {
    /// Count `pid`'s user-space instructions for `secs` seconds; `None` without perf.
    pub fn start(pid: u32, secs: u64, dir: &Path) -> Option<Counter> {
        let out = dir.join(format!("perf-{pid}-{}.csv", uuid::Uuid::new_v4().simple()));
        let child = Command::new("perf")
            .args(["stat", "-x,", "-e", "instructions:u", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(&out)
            .args(["--", "sleep"])
            .arg(secs.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Counter { child, out })
    }

    /// Wait for the count; `None` when perf could not count.
    pub fn finish(mut self) -> Option<u64> {
        let status = self.child.wait().ok()?;
        let text = std::fs::read_to_string(&self.out).ok();
        let _ = std::fs::remove_file(&self.out);
        if !status.success() {
            return None;
        }
        parse(&text?)
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The count from `perf stat -x,` output: `12345,,instructions:u,...`.
pub fn parse(text: &str) -> Option<u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.contains("instructions"))
        .and_then(|l| l.split(',').next()?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_read_from_perf_stat_csv() {
        let text = "# started on Fri Dec  4 16:00:00 2026\n\n\
            123456789,,instructions:u,2001,100.00,,\n";
        assert_eq!(parse(text), Some(123_456_789));
        assert_eq!(parse("<not supported>,,instructions:u,0,100.00,,\n"), None);
        assert_eq!(parse(""), None);
    }
}
