//! Instructions per request, counted by callgrind (valgrind): the server runs under
//! `valgrind --tool=callgrind`, wrk loads it for a few seconds (after a warm-up) between a
//! `callgrind_control --zero` and a `--dump`, and the dump's instruction total is divided
//! by the requests wrk counted. Unlike requests/s, the count hardly moves when other
//! processes share the cores, so it compares two servers on a busy machine. (The machine
//! this was written on is a VM without hardware counters, where `perf stat` cannot count
//! instructions.)
//!
//! Under callgrind a server answers a few hundred requests per second, so picloud's
//! recorded share of successful calls is set to what it is under the real load: the
//! default cap of 1,000 records/s is about 1.3 % of 76,000 requests/s; here the cap is
//! `RECORDED_PER_SEC`, about 1.3 % of the rate under callgrind.
use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::child::Server;
use crate::wrk::{self, Load};

/// picloud's `[http] recorded_successes_per_sec` under callgrind.
pub const RECORDED_PER_SEC: &str = "6";

/// Whether valgrind can be run.
pub fn available() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `command` run under callgrind, its dumps in `dir`.
pub fn wrap(command: &Command, dir: &Path) -> Command {
    let mut wrapped = Command::new("valgrind");
    wrapped
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}/cg.%p", dir.display()))
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(cwd) = command.get_current_dir() {
        wrapped.current_dir(cwd);
    }
    wrapped
}

/// Instructions per request of `server` (started with `wrap`) answering `path`, counted
/// by `counter` (the server's: its dumps are numbered, so one counter per server).
///
/// # Errors
/// When wrk or callgrind_control fail, or the dump has no total.
pub fn per_request(
    server: &Server,
    counter: &mut Counter<'_>,
    path: &str,
    secs: u64,
) -> anyhow::Result<f64> {
    let load = |duration_secs| Load {
        threads: 1,
        connections: 4,
        duration_secs,
    };
    wrk::run(server.addr, path, load(2))?;
    counter.zero()?;
    let run = wrk::run(server.addr, path, load(secs.max(1)))?;
    let total = counter.dump()?;
    anyhow::ensure!(run.requests > 0, "no requests under callgrind");
    anyhow::ensure!(run.non_2xx == 0, "error answers under callgrind");
    Ok(total as f64 / run.requests as f64)
}

/// The instruction counters of a server run under `wrap`: zeroed before a stretch of
/// work, dumped after it. Each dump is a file `cg.PID.K` in the wrapped command's dump
/// directory (kept for `callgrind_annotate`).
pub struct Counter<'a> {
    pid: String,
    dir: &'a Path,
    dumps: u32,
}

impl<'a> Counter<'a> {
    /// The counters of `server`, whose dumps go to `dir`.
    pub fn new(server: &Server, dir: &'a Path) -> Self {
        Counter {
            pid: server.pid().to_string(),
            dir,
            dumps: 0,
        }
    }

    /// Set every counter to zero.
    ///
    /// # Errors
    /// When callgrind_control fails.
    pub fn zero(&self) -> anyhow::Result<()> {
        control("--zero", &self.pid)
    }

    /// Dump the counters; the instructions counted since the last zero or dump.
    ///
    /// # Errors
    /// When callgrind_control fails or the dump has no total.
    pub fn dump(&mut self) -> anyhow::Result<u64> {
        control("--dump", &self.pid)?;
        self.dumps += 1;
        let dump = self.dir.join(format!("cg.{}.{}", self.pid, self.dumps));
        let text = std::fs::read_to_string(&dump)
            .with_context(|| format!("no callgrind dump at {}", dump.display()))?;
        summary(&text).context("the callgrind dump has no summary line")
    }
}

fn control(what: &str, pid: &str) -> anyhow::Result<()> {
    let out = Command::new("callgrind_control")
        .arg(what)
        .arg(pid)
        .output()
        .context("cannot run callgrind_control")?;
    anyhow::ensure!(
        out.status.success(),
        "callgrind_control {what} {pid} failed"
    );
    Ok(())
}

/// The `summary: N` line of a callgrind dump.
pub fn summary(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_is_read_from_the_dump_and_the_command_is_wrapped() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 197267088\ntotals: 197801818\n";
        assert_eq!(summary(dump), Some(197_267_088));
        assert_eq!(summary("events: Ir\n"), None);
        let mut cmd = Command::new("/bin/picloud");
        cmd.arg("serve").env("A", "1").env_remove("B");
        let wrapped = wrap(&cmd, Path::new("/tmp/x"));
        assert_eq!(wrapped.get_program(), "valgrind");
        let args: Vec<_> = wrapped
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--tool=callgrind",
                "--callgrind-out-file=/tmp/x/cg.%p",
                "/bin/picloud",
                "serve"
            ]
        );
        assert_eq!(wrapped.get_envs().count(), 2);
    }
}
