//! Server processes the bench starts: each is killed when its guard drops, so an error or
//! a panic anywhere in the run never leaves a server behind.
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;

/// How long a server may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running server process and the address it printed.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// Where the child's stderr goes, shown when it fails to start.
    stderr_path: std::path::PathBuf,
}

impl Server {
    /// Start `command`, with stderr into `stderr_path`, and wait for its stdout line
    /// `listening on http://IP:PORT`. The rest of stdout is drained in the background so the
    /// child never blocks on a full pipe.
    ///
    /// # Errors
    /// When it cannot be started, exits, or prints no address within two minutes.
    pub fn start(mut command: Command, stderr_path: &Path) -> anyhow::Result<Server> {
        let stderr = File::create(stderr_path).context("cannot create the server log file")?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        let stdout = child.stdout.take().context("the child has no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(addr) = parse_listening(&line) {
                    sent = tx.send(addr).is_ok();
                }
            }
        });
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr_path: stderr_path.to_owned(),
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => {
                server.addr = addr;
                Ok(server)
            }
            Err(_) => {
                let status = server.child.try_wait().ok().flatten();
                anyhow::bail!(
                    "{program} did not print 'listening on http://...' ({}); its stderr:\n{}",
                    status.map_or_else(|| "still running".to_owned(), |s| s.to_string()),
                    server.stderr_tail()
                )
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the child wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `listening on http://127.0.0.1:PORT` -> the address; anything else -> `None`.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = line.trim().strip_prefix("listening on http://")?;
    rest.trim_end_matches('/').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_bound_address() {
        assert_eq!(
            parse_listening("listening on http://127.0.0.1:43210"),
            Some(SocketAddr::from(([127, 0, 0, 1], 43210)))
        );
        assert_eq!(
            parse_listening("listening on http://127.0.0.1:8080/\n").map(|a| a.port()),
            Some(8080)
        );
        assert_eq!(parse_listening("starting up"), None);
        assert_eq!(parse_listening("listening on http://localhost:80"), None);
    }
}
