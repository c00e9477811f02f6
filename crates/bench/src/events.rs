//! Events end to end: `picloud serve` on SQLite or PostgreSQL, a topic with a trivial
//! subscriber, and a producer endpoint that publishes 1,000 events per request.
//!
//! - burst: publish N events as fast as the producer can, and time from the first publish
//!   until the N-th handler run has committed (`picloud_events_total{outcome="done"}`),
//!   which gives events/s; the delay quantiles come from the server's own
//!   `picloud_event_delay_seconds` (due time -> handler start).
//! - paced: a fresh server, 200 events/s for 5 s (one publish per request), to see the
//!   delay when the dispatcher is not saturated.
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::child::Server;

const PRODUCER: &str = r#"
    let from = parse_int(request.query.from ?? "0");
    let count = parse_int(request.query.count ?? "1000");
    for n in from..from + count { pubsub::publish("bench", n); }
    "ok"
"#;
const SUBSCRIBER: &str = "()";

#[derive(Debug, Clone)]
pub struct EventRun {
    pub backend: &'static str,
    pub events: u64,
    pub events_per_sec: f64,
    pub burst_p50_ms: f64,
    pub burst_p99_ms: f64,
    pub paced_events: u64,
    pub paced_p50_ms: f64,
    pub paced_p99_ms: f64,
}

/// Start a server with a topic subscriber and the producer endpoint.
fn start(
    bin: &Path,
    work: &Path,
    name: &str,
    database_url: Option<&str>,
) -> anyhow::Result<(Server, String)> {
    let data_dir = work.join(name);
    std::fs::create_dir_all(&data_dir)?;
    let token = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .env("PICLOUD_BIND", "127.0.0.1:0")
        .env("PICLOUD_DATA_DIR", &data_dir)
        .env("PICLOUD_ADMIN_TOKEN", &token)
        .env_remove("PICLOUD_CONFIG")
        .env("RUST_LOG", "warn")
        .current_dir(work);
    match database_url {
        Some(url) => cmd.env("PICLOUD_DATABASE_URL", url),
        None => cmd.env_remove("PICLOUD_DATABASE_URL"),
    };
    let server = Server::start(cmd, &work.join(format!("{name}.log")))?;
    anyhow::ensure!(server.addr.ip().is_loopback(), "picloud is not on loopback");
    let addr = server.addr;
    runtime()?.block_on(async {
        let http = reqwest::Client::new();
        let api = format!("http://{addr}/api/v1");
        let steps = [
            (reqwest::Method::POST, format!("{api}/apps"), json!({"name": "events"})),
            (reqwest::Method::PUT, format!("{api}/apps/events/scripts/producer"), json!({"source": PRODUCER})),
            (reqwest::Method::PUT, format!("{api}/apps/events/scripts/sink"), json!({"source": SUBSCRIBER})),
            (
                reqwest::Method::POST,
                format!("{api}/apps/events/triggers"),
                json!({"kind": "http", "method": "POST", "path": "/produce", "script": "producer"}),
            ),
            (
                reqwest::Method::POST,
                format!("{api}/apps/events/triggers"),
                json!({"kind": "topic", "topic": "bench", "script": "sink"}),
            ),
        ];
        for (method, url, body) in steps {
            let res = http.request(method.clone(), &url).bearer_auth(&token).json(&body).send().await?;
            anyhow::ensure!(res.status().is_success(), "{method} {url}: {}", res.text().await.unwrap_or_default());
        }
        Ok(())
    })
    .with_context(|| format!("setting up the events app failed; stderr:\n{}", server.stderr_tail()))?;
    Ok((server, token))
}

/// Measure one backend: a burst of `events` and a paced run, each on a fresh server with
/// its own database (`database_urls`: burst, paced; `None` for SQLite in the data dir).
///
/// # Errors
/// When a server does not start or a request fails.
pub fn run(
    bin: &Path,
    work: &Path,
    backend: &'static str,
    database_urls: [Option<String>; 2],
    events: u64,
) -> anyhow::Result<EventRun> {
    let [burst_url, paced_url] = database_urls;
    let rt = runtime()?;
    let http = reqwest::Client::new();

    let (burst_server, _) = start(bin, work, &format!("{backend}-burst"), burst_url.as_deref())?;
    let addr = burst_server.addr;
    eprintln!("events ({backend}): burst of {events} on http://{addr}");
    let (elapsed, delays) = rt.block_on(async {
        let started = Instant::now();
        let mut from = 0;
        while from < events {
            let count = (events - from).min(1000);
            let res = http
                .post(format!(
                    "http://{addr}/events/produce?from={from}&count={count}"
                ))
                .send()
                .await?;
            anyhow::ensure!(res.status().is_success(), "produce: {}", res.status());
            from += count;
        }
        wait_done(&http, addr, events, Duration::from_secs(300)).await?;
        let elapsed = started.elapsed();
        Ok((elapsed, delay_quantiles(&http, addr).await?))
    })?;
    drop(burst_server);

    let (paced_server, _) = start(bin, work, &format!("{backend}-paced"), paced_url.as_deref())?;
    let addr = paced_server.addr;
    let paced_events: u64 = 1_000;
    eprintln!("events ({backend}): {paced_events} paced at 200/s on http://{addr}");
    let paced = rt.block_on(async {
        let mut next = tokio::time::Instant::now();
        for n in 0..paced_events {
            tokio::time::sleep_until(next).await;
            next += Duration::from_millis(5);
            let res = http
                .post(format!("http://{addr}/events/produce?from={n}&count=1"))
                .send()
                .await?;
            anyhow::ensure!(res.status().is_success(), "produce: {}", res.status());
        }
        wait_done(&http, addr, paced_events, Duration::from_secs(60)).await?;
        delay_quantiles(&http, addr).await
    })?;
    drop(paced_server);

    Ok(EventRun {
        backend,
        events,
        events_per_sec: events as f64 / elapsed.as_secs_f64(),
        burst_p50_ms: delays.0,
        burst_p99_ms: delays.1,
        paced_events,
        paced_p50_ms: paced.0,
        paced_p99_ms: paced.1,
    })
}

/// Wait until `picloud_events_total{kind="topic",outcome="done"}` reaches `n`. The bench
/// reads /metrics every 20 ms: a measuring client, not part of the server.
async fn wait_done(
    http: &reqwest::Client,
    addr: SocketAddr,
    n: u64,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let text = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let done = metric_sum(
            &text,
            "picloud_events_total",
            &["kind=\"topic\"", "outcome=\"done\""],
        );
        if done >= n as f64 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {n} events were handled in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// p50 and p99 of `picloud_event_delay_seconds`, in milliseconds, estimated from its
/// buckets as Prometheus' `histogram_quantile` does.
async fn delay_quantiles(http: &reqwest::Client, addr: SocketAddr) -> anyhow::Result<(f64, f64)> {
    let text = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let q = |quantile: f64| {
        histogram_quantile(&text, "picloud_event_delay_seconds", quantile).map(|s| s * 1000.0)
    };
    match (q(0.5), q(0.99)) {
        (Some(p50), Some(p99)) => Ok((p50, p99)),
        _ => anyhow::bail!("the server reported no picloud_event_delay_seconds buckets"),
    }
}

/// The `q` quantile of histogram `name` from its cumulative `_bucket{le=...}` series:
/// linear within the bucket that holds it, like Prometheus' `histogram_quantile`.
pub fn histogram_quantile(text: &str, name: &str, q: f64) -> Option<f64> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let (series, count) = l.rsplit_once(' ')?;
            let labels = series.strip_prefix(&prefix)?;
            let le = labels.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, count.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower);
            }
            let share = if count > below {
                (rank - below) / (count - below)
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * share);
        }
        (lower, below) = (bound, count);
    }
    None
}

/// The sum of the samples of `name` whose labels contain every one of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let rest = series.strip_prefix(name)?;
            if !(rest.is_empty() || rest.starts_with('{')) {
                return None;
            }
            labels
                .iter()
                .all(|want| rest.contains(want))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_interpolated_within_their_bucket() {
        let text = "picloud_event_delay_seconds_bucket{le=\"0.001\"} 50\n\
            picloud_event_delay_seconds_bucket{le=\"0.002\"} 90\n\
            picloud_event_delay_seconds_bucket{le=\"0.004\"} 100\n\
            picloud_event_delay_seconds_bucket{le=\"+Inf\"} 100\n\
            picloud_event_delay_seconds_count 100\n";
        let q = |q| histogram_quantile(text, "picloud_event_delay_seconds", q).unwrap();
        assert!((q(0.5) - 0.001).abs() < 1e-12);
        assert!((q(0.7) - 0.0015).abs() < 1e-12);
        assert!((q(0.99) - 0.0038).abs() < 1e-12);
        assert!(histogram_quantile(text, "other", 0.5).is_none());
    }

    #[test]
    fn metric_sums_add_up_matching_series_only() {
        let text = "# HELP x\n\
            picloud_events_total{kind=\"topic\",outcome=\"done\"} 7\n\
            picloud_events_total{kind=\"queue\",outcome=\"done\"} 5\n\
            picloud_events_total{kind=\"topic\",outcome=\"retry\"} 2\n\
            picloud_events_totalx{kind=\"topic\",outcome=\"done\"} 100\n\
            picloud_event_delay_seconds{quantile=\"0.99\"} 0.012\n";
        assert_eq!(
            metric_sum(
                text,
                "picloud_events_total",
                &["kind=\"topic\"", "outcome=\"done\""]
            ),
            7.0
        );
        assert_eq!(
            metric_sum(text, "picloud_events_total", &["outcome=\"done\""]),
            12.0
        );
        assert!(
            (metric_sum(text, "picloud_event_delay_seconds", &["quantile=\"0.99\""]) - 0.012).abs()
                < 1e-12
        );
    }
}
