//! Running `wrk` and reading its report: requests per second and the p50/p99 of its
//! `--latency` distribution.
use std::net::SocketAddr;
use std::process::Command;

use anyhow::Context;

/// The load shape, the same for every target in one run.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub threads: u32,
    pub connections: u32,
    pub duration_secs: u64,
}

/// What one wrk run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkResult {
    pub requests_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub requests: u64,
    /// Answers that were not 2xx or 3xx; a run with any is not a valid comparison.
    pub non_2xx: u64,
    /// connect + read + write + timeout socket errors.
    pub socket_errors: u64,
}

/// Fail early, with the install command, when wrk is not on the PATH.
///
/// # Errors
/// When `wrk` cannot be run.
pub fn ensure_installed() -> anyhow::Result<()> {
    match Command::new("wrk").arg("--version").output() {
        Ok(_) => Ok(()),
        Err(_) => anyhow::bail!(
            "wrk is not installed: run `apt-get install -y wrk` (Debian/Ubuntu) and try again"
        ),
    }
}

/// Load `http://{addr}{path}` (loopback only) and parse the report.
///
/// # Errors
/// When the target is not on loopback, wrk fails, or its report cannot be read.
pub fn run(addr: SocketAddr, path: &str, load: Load) -> anyhow::Result<WrkResult> {
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "the benchmark only sends traffic to loopback, not {addr}"
    );
    let url = format!("http://{addr}{path}");
    let output = Command::new("wrk")
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.duration_secs))
        .arg("--latency")
        .arg(&url)
        .output()
        .context("cannot run wrk (apt-get install -y wrk)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        anyhow::bail!(
            "wrk failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse(&stdout).with_context(|| format!("cannot read wrk's report:\n{stdout}"))
}

/// Parse wrk's text report.
///
/// # Errors
/// When `Requests/sec` or the 50% / 99% latency lines are missing.
pub fn parse(report: &str) -> anyhow::Result<WrkResult> {
    let mut requests_per_sec = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut requests = 0;
    let mut non_2xx = 0;
    let mut socket_errors = 0;
    for line in report.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => requests_per_sec = v.parse::<f64>().ok(),
            (Some("50%"), Some(v)) => p50 = parse_duration_us(v),
            (Some("99%"), Some(v)) => p99 = parse_duration_us(v),
            (Some(n), Some("requests")) => requests = n.parse().unwrap_or(0),
            _ => {}
        }
        if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = n.trim().parse().unwrap_or(0);
        }
        if let Some(errors) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            socket_errors = errors
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        }
    }
    Ok(WrkResult {
        requests_per_sec: requests_per_sec.context("no Requests/sec line")?,
        p50_us: p50.context("no 50% latency line (was --latency passed?)")?,
        p99_us: p99.context("no 99% latency line (was --latency passed?)")?,
        requests,
        non_2xx,
        socket_errors,
    })
}

/// wrk's durations (`812.00us`, `1.20ms`, `2.01s`, `1.00m`) in microseconds.
fn parse_duration_us(raw: &str) -> Option<f64> {
    let split = raw.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = raw.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1_000.0,
        "s" => 1_000_000.0,
        "m" => 60_000_000.0,
        "h" => 3_600_000_000.0,
        _ => return None,
    };
    Some(value * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 10s test @ http://127.0.0.1:40000/bench/hello
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   480.12us  310.40us  12.30ms   91.20%
    Req/Sec    62.10k     3.20k   70.00k    72.00%
  Latency Distribution
     50%  420.00us
     75%  560.00us
     90%  780.00us
     99%    1.85ms
  1236000 requests in 10.00s, 150.88MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec: 123584.21
Transfer/sec:     15.09MB
";

    #[test]
    fn a_wrk_report_gives_rate_percentiles_and_errors() {
        let r = parse(REPORT).expect("parses");
        assert!((r.requests_per_sec - 123_584.21).abs() < 1e-6);
        assert!((r.p50_us - 420.0).abs() < 1e-9);
        assert!((r.p99_us - 1_850.0).abs() < 1e-9);
        assert_eq!(r.requests, 1_236_000);
        assert_eq!(r.non_2xx, 5);
        assert_eq!(r.socket_errors, 3);
    }

    #[test]
    fn a_report_without_latency_distribution_is_refused() {
        let err = parse("Requests/sec: 10.0\n").expect_err("no percentiles");
        assert!(err.to_string().contains("50%"));
    }

    #[test]
    fn durations_in_every_wrk_unit_convert_to_microseconds() {
        assert_eq!(parse_duration_us("812.00us"), Some(812.0));
        assert_eq!(parse_duration_us("2.50s"), Some(2_500_000.0));
        assert_eq!(parse_duration_us("1.00m"), Some(60_000_000.0));
        assert_eq!(parse_duration_us("12"), None);
        assert_eq!(parse_duration_us("3.0xs"), None);
    }

    #[test]
    fn only_loopback_targets_are_loaded() {
        let load = Load {
            threads: 1,
            connections: 1,
            duration_secs: 1,
        };
        let err = run(SocketAddr::from(([10, 0, 0, 1], 80)), "/", load).expect_err("refused");
        assert!(err.to_string().contains("loopback"));
    }
}
