//! Events end to end: `picloud serve` on SQLite or PostgreSQL, a subscriber running one of
//! three handlers, and producer endpoints that publish (topic) or send (queue) 1,000
//! events per request. Each measurement runs on a fresh server with its own database.
//!
//! - burst: publish N events as fast as the producer can, and time from the first publish
//!   until the N-th handler run has committed (`picloud_events_total{outcome="done"}`),
//!   which gives events/s; the delay quantiles come from the server's own
//!   `picloud_event_delay_seconds` (due time -> handler start).
//! - queued: send M queue messages while the queue has no consumer (they wait, parked),
//!   then create the consumer: all M are due at once, and events/s is M over the time from
//!   the trigger's creation to the M-th commit. Against the burst's rate, it shows whether
//!   the cost per event grows with the number of waiting rows.
//! - paced: 200 events/s for 5 s (one publish per request), to see the delay when the
//!   dispatcher is not saturated.
//! - instructions per event (`--callgrind-events N`): the server under callgrind, N queue
//!   messages parked, the counters zeroed, the consumer created, the counters dumped once
//!   all N were committed; the total, less what the bench's own reads of /metrics cost,
//!   over N. Unlike events/s, it hardly moves when other processes share the cores. On
//!   PostgreSQL it counts the server's side only (the database is another process).
//!
//! After each run the handler's effects are checked: `incr` must have counted every event
//! exactly once, `set` must have written the last event's key.
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::callgrind;
use crate::child::Server;

const PUBLISHER: &str = r#"
    let from = parse_int(request.query.from ?? "0");
    let count = parse_int(request.query.count ?? "1000");
    for n in from..from + count { pubsub::publish("bench", n); }
    "ok"
"#;
const SENDER: &str = r#"
    let from = parse_int(request.query.from ?? "0");
    let count = parse_int(request.query.count ?? "1000");
    for n in from..from + count { queue::send("bench", n); }
    "ok"
"#;

/// What the subscriber does with each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// Writes nothing.
    Noop,
    /// `kv::incr` on one hot key.
    Incr,
    /// `kv::set` of a distinct key per event.
    Set,
}

impl Handler {
    pub const ALL: [Handler; 3] = [Handler::Noop, Handler::Incr, Handler::Set];

    pub fn name(self) -> &'static str {
        match self {
            Handler::Noop => "noop",
            Handler::Incr => "kv::incr",
            Handler::Set => "kv::set",
        }
    }

    fn source(self) -> &'static str {
        match self {
            Handler::Noop => "()",
            Handler::Incr => r#"kv::incr("count", 1);"#,
            Handler::Set => r#"kv::set("k" + event.payload, event.payload);"#,
        }
    }
}

/// One backend and handler: the burst, and (unless skipped) the queued run.
#[derive(Debug, Clone)]
pub struct EventRun {
    pub backend: &'static str,
    pub handler: Handler,
    pub events: u64,
    /// The median of the rounds' rates.
    pub events_per_sec: f64,
    /// Each round's rate: bursts one after the other on one server.
    pub burst_rounds: Vec<f64>,
    pub burst_p50_ms: f64,
    pub burst_p99_ms: f64,
    /// Events queued before the consumer existed, and their rate.
    pub queued: Option<(u64, f64)>,
    /// Events run under callgrind, and the instructions per event.
    pub instructions: Option<(u64, f64)>,
}

impl EventRun {
    /// The queued run's rate over the burst's (1.0: no slower with the longer queue).
    pub fn queued_ratio(&self) -> Option<f64> {
        let (_, rate) = self.queued?;
        (self.events_per_sec > 0.0).then(|| rate / self.events_per_sec)
    }
}

/// The delay of a paced run on one backend (handler: noop).
#[derive(Debug, Clone)]
pub struct PacedRun {
    pub backend: &'static str,
    pub events: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// What to measure per backend.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub burst: u64,
    /// Bursts per backend and handler, on one server; their rates' median is the figure.
    pub burst_rounds: u32,
    /// 0: no queued run.
    pub queued: u64,
    pub paced: u64,
    /// Events run under callgrind for instructions per event (0: none).
    pub callgrind: u64,
}

/// Where the callgrind runs keep their dumps.
#[derive(Debug, Clone, Copy)]
pub struct CallgrindDir<'a>(pub &'a Path);

/// How often the bench reads /metrics while it waits: often for the wall-clock runs, seldom
/// under callgrind (each read is counted with the server's work, and then taken out).
const POLL: Duration = Duration::from_millis(20);
const CALLGRIND_POLL: Duration = Duration::from_millis(500);
/// Reads of /metrics whose cost is measured under callgrind.
const METRICS_SAMPLES: u64 = 10;

/// Start a server with the producer endpoints and, for a burst, the topic subscriber
/// (the queue consumer is created by the queued run once its messages wait); under
/// callgrind with `callgrind`.
fn start(
    bin: &Path,
    work: &Path,
    name: &str,
    database_url: Option<&str>,
    handler: Handler,
    topic: bool,
    callgrind: Option<CallgrindDir<'_>>,
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
    if let Some(CallgrindDir(dir)) = callgrind {
        cmd = callgrind::wrap(&cmd, dir);
    }
    let server = Server::start(cmd, &work.join(format!("{name}.log")))?;
    anyhow::ensure!(server.addr.ip().is_loopback(), "picloud is not on loopback");
    let addr = server.addr;
    runtime()?
        .block_on(async {
            let http = reqwest::Client::new();
            let api = format!("http://{addr}/api/v1");
            let post = reqwest::Method::POST;
            let put = reqwest::Method::PUT;
            let mut steps = vec![
                (post.clone(), format!("{api}/apps"), json!({"name": "events"})),
                (put.clone(), format!("{api}/apps/events/scripts/producer"), json!({"source": PUBLISHER})),
                (put.clone(), format!("{api}/apps/events/scripts/sender"), json!({"source": SENDER})),
                (put, format!("{api}/apps/events/scripts/sink"), json!({"source": handler.source()})),
                (
                    post.clone(),
                    format!("{api}/apps/events/triggers"),
                    json!({"kind": "http", "method": "POST", "path": "/produce", "script": "producer"}),
                ),
                (
                    post.clone(),
                    format!("{api}/apps/events/triggers"),
                    json!({"kind": "http", "method": "POST", "path": "/send", "script": "sender"}),
                ),
            ];
            if topic {
                steps.push((
                    post,
                    format!("{api}/apps/events/triggers"),
                    json!({"kind": "topic", "topic": "bench", "script": "sink"}),
                ));
            }
            for (method, url, body) in steps {
                admin(&http, method, &url, &token, &body).await?;
            }
            Ok::<(), anyhow::Error>(())
        })
        .with_context(|| {
            format!(
                "setting up the events app failed; stderr:\n{}",
                server.stderr_tail()
            )
        })?;
    Ok((server, token))
}

async fn admin(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: &serde_json::Value,
) -> anyhow::Result<()> {
    let res = http
        .request(method.clone(), url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await?;
    anyhow::ensure!(
        res.status().is_success(),
        "{method} {url}: {}",
        res.text().await.unwrap_or_default()
    );
    Ok(())
}

/// The consumer of queue `bench`, running the subscriber's script.
async fn create_consumer(
    http: &reqwest::Client,
    addr: SocketAddr,
    token: &str,
) -> anyhow::Result<()> {
    let trigger = json!({"kind": "queue", "queue": "bench", "script": "sink"});
    let url = format!("http://{addr}/api/v1/apps/events/triggers");
    admin(http, reqwest::Method::POST, &url, token, &trigger).await
}

/// POST `/events/{path}` for events `0..n`, 1,000 per request.
async fn produce(
    http: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    n: u64,
) -> anyhow::Result<()> {
    let mut from = 0;
    while from < n {
        let count = (n - from).min(1000);
        let res = http
            .post(format!(
                "http://{addr}/events/{path}?from={from}&count={count}"
            ))
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "{path}: {}", res.status());
        from += count;
    }
    Ok(())
}

/// Measure one backend: per handler a burst and a queued run, then a paced run, each on a
/// fresh server with its own database (`next_url`: a fresh PostgreSQL schema, or `None`
/// for SQLite in the data dir). With `plan.callgrind`, also instructions per event, the
/// dumps in `callgrind`.
///
/// # Errors
/// When a server does not start, a request fails or the effects are wrong.
pub fn run(
    bin: &Path,
    work: &Path,
    backend: &'static str,
    next_url: &mut dyn FnMut() -> anyhow::Result<Option<String>>,
    plan: Plan,
    handlers: &[Handler],
    callgrind: CallgrindDir<'_>,
) -> anyhow::Result<(Vec<EventRun>, PacedRun)> {
    let rt = runtime()?;
    let http = reqwest::Client::new();
    let mut runs = Vec::new();
    for (i, &handler) in handlers.iter().enumerate() {
        let url = next_url()?;
        let name = format!("{backend}-burst-{i}");
        let (server, token) = start(bin, work, &name, url.as_deref(), handler, true, None)?;
        let addr = server.addr;
        let events = plan.burst;
        let rounds = plan.burst_rounds.max(1);
        eprintln!(
            "events ({backend}, {}): {rounds} bursts of {events} on http://{addr}",
            handler.name()
        );
        let (burst_rounds, delays) = rt.block_on(async {
            let mut rates = Vec::new();
            for round in 1..=u64::from(rounds) {
                let started = Instant::now();
                produce(&http, addr, "produce", events).await?;
                let done = events * round;
                wait_done(&http, addr, "topic", done, Duration::from_secs(600), POLL).await?;
                rates.push(events as f64 / started.elapsed().as_secs_f64());
            }
            check_effects(&http, addr, &token, handler, events, u64::from(rounds)).await?;
            Ok::<_, anyhow::Error>((rates, delay_quantiles(&http, addr).await?))
        })?;
        drop(server);

        let queued = if plan.queued > 0 {
            let url = next_url()?;
            let name = format!("{backend}-queued-{i}");
            let (server, token) = start(bin, work, &name, url.as_deref(), handler, false, None)?;
            let addr = server.addr;
            let n = plan.queued;
            eprintln!(
                "events ({backend}, {}): {n} queued on http://{addr}",
                handler.name()
            );
            let elapsed = rt.block_on(async {
                produce(&http, addr, "send", n).await?;
                let started = Instant::now();
                create_consumer(&http, addr, &token).await?;
                wait_done(&http, addr, "queue", n, Duration::from_secs(1800), POLL).await?;
                let elapsed = started.elapsed();
                check_effects(&http, addr, &token, handler, n, 1).await?;
                Ok::<_, anyhow::Error>(elapsed)
            })?;
            drop(server);
            Some((n, n as f64 / elapsed.as_secs_f64()))
        } else {
            None
        };
        let instructions = if plan.callgrind > 0 {
            let url = next_url()?;
            let name = format!("{backend}-callgrind-{i}");
            let n = plan.callgrind;
            let per_event =
                instructions_per_event(bin, work, &name, url.as_deref(), handler, n, callgrind)?;
            Some((n, per_event))
        } else {
            None
        };
        runs.push(EventRun {
            backend,
            handler,
            events,
            events_per_sec: crate::report::median(&burst_rounds).unwrap_or(0.0),
            burst_rounds,
            burst_p50_ms: delays.0,
            burst_p99_ms: delays.1,
            queued,
            instructions,
        });
    }

    let url = next_url()?;
    let name = format!("{backend}-paced");
    let (server, _) = start(bin, work, &name, url.as_deref(), Handler::Noop, true, None)?;
    let addr = server.addr;
    let paced_events = plan.paced.max(1);
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
        wait_done(
            &http,
            addr,
            "topic",
            paced_events,
            Duration::from_secs(60),
            POLL,
        )
        .await?;
        delay_quantiles(&http, addr).await
    })?;
    drop(server);
    Ok((
        runs,
        PacedRun {
            backend,
            events: paced_events,
            p50_ms: paced.0,
            p99_ms: paced.1,
        },
    ))
}

/// Instructions per event of `handler`: the server under callgrind, `n` queue messages
/// parked, the counters zeroed, the consumer created, the counters dumped once all `n`
/// were committed. What the bench's reads of /metrics cost the server meanwhile is
/// measured first (the mean of a few reads) and taken out of the total.
fn instructions_per_event(
    bin: &Path,
    work: &Path,
    name: &str,
    database_url: Option<&str>,
    handler: Handler,
    n: u64,
    dir: CallgrindDir<'_>,
) -> anyhow::Result<f64> {
    let (server, token) = start(bin, work, name, database_url, handler, false, Some(dir))?;
    let addr = server.addr;
    eprintln!(
        "events ({name}, {}): {n} queued under callgrind on http://{addr}",
        handler.name()
    );
    let http = reqwest::Client::new();
    let mut counter = callgrind::Counter::new(&server, dir.0);
    runtime()?.block_on(async {
        produce(&http, addr, "send", n).await?;
        counter.zero()?;
        for _ in 0..METRICS_SAMPLES {
            metrics_text(&http, addr).await?;
        }
        let per_read = counter.dump()? as f64 / METRICS_SAMPLES as f64;
        counter.zero()?;
        create_consumer(&http, addr, &token).await?;
        let reads = wait_done(
            &http,
            addr,
            "queue",
            n,
            Duration::from_secs(3600),
            CALLGRIND_POLL,
        )
        .await?;
        let total = counter.dump()? as f64;
        check_effects(&http, addr, &token, handler, n, 1).await?;
        Ok(per_event(total, reads, per_read, n))
    })
}

/// The instructions of `n` events: `total` less `reads` reads of /metrics at `per_read`.
fn per_event(total: f64, reads: u64, per_read: f64, n: u64) -> f64 {
    (total - reads as f64 * per_read).max(0.0) / n.max(1) as f64
}

/// Whether the handler's writes are all there: exactly `n` increments, or the last key.
async fn check_effects(
    http: &reqwest::Client,
    addr: SocketAddr,
    token: &str,
    handler: Handler,
    n: u64,
    rounds: u64,
) -> anyhow::Result<()> {
    // Each round publishes payloads 0..n: the counter adds up, the keys are written again.
    let (key, want) = match handler {
        Handler::Noop => return Ok(()),
        Handler::Incr => ("count".to_owned(), json!(n * rounds)),
        Handler::Set => (format!("k{}", n - 1), json!(n - 1)),
    };
    let url = format!("http://{addr}/api/v1/apps/events/kv/{key}");
    let res = http.get(&url).bearer_auth(token).send().await?;
    anyhow::ensure!(res.status().is_success(), "GET {url}: {}", res.status());
    let entry: serde_json::Value = res.json().await?;
    anyhow::ensure!(
        entry["value"] == want,
        "{}: kv {key} is {} after {n} events, want {want}",
        handler.name(),
        entry["value"]
    );
    Ok(())
}

/// Wait until `picloud_events_total{kind,outcome="done"}` reaches `n`; the number of
/// reads of /metrics it took. The bench reads /metrics every `poll`: a measuring client,
/// not part of the server.
async fn wait_done(
    http: &reqwest::Client,
    addr: SocketAddr,
    kind: &str,
    n: u64,
    within: Duration,
    poll: Duration,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + within;
    let kind = format!("kind=\"{kind}\"");
    let mut reads = 0;
    loop {
        let text = metrics_text(http, addr).await?;
        reads += 1;
        let done = metric_sum(
            &text,
            "picloud_events_total",
            &[kind.as_str(), "outcome=\"done\""],
        );
        if done >= n as f64 {
            return Ok(reads);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {n} events were handled in {within:?}"
        );
        tokio::time::sleep(poll).await;
    }
}

async fn metrics_text(http: &reqwest::Client, addr: SocketAddr) -> anyhow::Result<String> {
    Ok(http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .text()
        .await?)
}
/// p50 and p99 of `picloud_event_delay_seconds`, in milliseconds, estimated from its
/// buckets as Prometheus' `histogram_quantile` does.
async fn delay_quantiles(http: &reqwest::Client, addr: SocketAddr) -> anyhow::Result<(f64, f64)> {
    let text = metrics_text(http, addr).await?;
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
    fn the_metrics_reads_are_taken_out_of_the_instructions_per_event() {
        assert!((per_event(1_000_000.0, 10, 20_000.0, 4000) - 200.0).abs() < 1e-9);
        assert_eq!(per_event(100.0, 10, 20.0, 4), 0.0);
        assert_eq!(per_event(100.0, 0, 0.0, 0), 100.0);
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
