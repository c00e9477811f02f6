//! Realtime fan-out: N SSE subscribers on one exposed topic of the real `picloud serve`,
//! against (a) a bare axum SSE broadcast server (a tokio broadcast channel, no auth, no
//! ids; `picloud-bench --serve-sse-baseline`, its own process) measured the same way in
//! the same run. Each (server, N) pair gets a fresh server process.
//!
//! Per pair: the server's VmRSS before and after N streams are open (so KB per
//! connection), optionally its CPU ticks while the N streams sit idle (nothing but
//! heartbeats), then a burst of publishes (PiCloud: the admin publish route; bare: a POST
//! that sends into the channel), one after another as fast as the server answers, then
//! single publishes, each sent once every stream has the one before (the fan-out of one
//! publish, not queued behind others). Every payload carries its sequence number; the
//! client notes the instant just before each publish is sent and each stream the instant
//! it reads the event, so latency is publish -> delivery on that stream, over all
//! subscribers and publishes of a phase. Events delivered per second are N x burst
//! publishes over the time from the first publish to the last delivery of the burst.
//!
//! The client is in this process: one small tokio task per stream, a raw TCP socket and
//! a 2 KiB line reader (the chunk-size lines of HTTP/1.1 chunked encoding are lines too,
//! and skipped: an SSE frame is written as one chunk, so a `data:` line is never split).
//! A delivery is noted in the stream's own slot (an atomic per stream and publish), so
//! the streams share no lock and the client costs both servers the same.
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::child::Server;
use crate::procfs;

/// The bare server's stream and publish paths.
pub const BARE_STREAM_PATH: &str = "/bench/_realtime?topics=bench";
const BARE_PUBLISH_PATH: &str = "/publish";
/// Both servers send a comment this often on an idle stream (PiCloud's default).
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Streams connecting at once while the N are opened.
const CONNECT_WAVE: usize = 500;
const TOKEN_SCRIPT: &str = r#"realtime::token(#{topics: ["bench"], sub: "bench", ttl: 3600})"#;

/// What one (server, N) pair measured.
#[derive(Debug, Clone)]
pub struct RealtimeRun {
    pub target: &'static str,
    pub subscribers: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// Publishes of the burst.
    pub publishes: u64,
    /// Deliveries seen, of the burst and the single publishes.
    pub delivered: u64,
    /// Burst: publish -> delivery quantiles over N x `publishes` deliveries.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub events_per_sec: f64,
    /// Single publishes, each after the one before reached every stream.
    pub single: u64,
    /// Their publish -> delivery quantiles (the fan-out of one publish).
    pub fanout: Quantiles,
    /// CPU ticks of the server over the idle window, with the window and the tick rate.
    pub idle: Option<IdleStreams>,
}

/// Publish -> delivery quantiles, in ms.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quantiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Quantiles {
    /// From delivery latencies in microseconds (sorted here).
    fn of(mut micros: Vec<u32>) -> Self {
        if micros.is_empty() {
            return Quantiles::default();
        }
        micros.sort_unstable();
        let pick = |q: f64| -> f64 {
            let i = ((micros.len() as f64 * q).ceil() as usize).clamp(1, micros.len()) - 1;
            f64::from(micros[i]) / 1000.0
        };
        Quantiles {
            p50_ms: pick(0.50),
            p99_ms: pick(0.99),
            max_ms: pick(1.0),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct IdleStreams {
    pub secs: f64,
    pub ticks: u64,
    pub ticks_per_sec: u64,
}

impl IdleStreams {
    /// Percent of one core.
    pub fn cpu_pct(&self) -> f64 {
        if self.secs <= 0.0 || self.ticks_per_sec == 0 {
            return 0.0;
        }
        self.ticks as f64 / self.ticks_per_sec as f64 / self.secs * 100.0
    }
}

impl RealtimeRun {
    /// Resident memory the open streams added, per stream, in KB (KiB).
    pub fn kib_per_connection(&self) -> f64 {
        self.rss_after_kib.saturating_sub(self.rss_before_kib) as f64
            / self.subscribers.max(1) as f64
    }

    /// Deliveries a complete run has: every stream got every publish.
    pub fn expected(&self) -> u64 {
        (self.publishes + self.single) * self.subscribers as u64
    }
}

/// What the run asks for.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub publishes: u64,
    /// Single publishes after the burst, each once the one before reached every stream.
    pub single: u64,
    /// Measure idle CPU for this long at N >= `idle_from` (0: never).
    pub idle_secs: u64,
    pub idle_from: usize,
}

/// The bare SSE server: `GET /bench/_realtime` streams every message of one tokio
/// broadcast channel as `data:`, with axum's keep-alive comment every 15 s; `POST
/// /publish` sends its body into the channel. Prints `listening on http://ADDR`.
///
/// # Errors
/// When the port cannot be bound or serving fails.
pub fn serve_baseline() -> anyhow::Result<()> {
    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::response::sse::{Event, KeepAlive, Sse};
    use axum::routing::{get, post};
    use tokio::sync::broadcast;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (tx, _) = broadcast::channel::<Arc<str>>(1024);
        let stream = |State(tx): State<broadcast::Sender<Arc<str>>>| async move {
            let events = futures::stream::unfold(tx.subscribe(), |mut rx| async move {
                loop {
                    match rx.recv().await {
                        Ok(text) => {
                            let event = Event::default().data(&*text);
                            return Some((Ok::<_, std::convert::Infallible>(event), rx));
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            });
            Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT))
        };
        let publish = |State(tx): State<broadcast::Sender<Arc<str>>>, body: Bytes| async move {
            let text: Arc<str> = String::from_utf8_lossy(&body).into();
            let _ = tx.send(text);
            axum::http::StatusCode::ACCEPTED
        };
        let app = Router::new()
            .route("/bench/_realtime", get(stream))
            .route(BARE_PUBLISH_PATH, post(publish))
            .with_state(tx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// Where streams connect and how publishes are sent, per target.
enum Target {
    Bare,
    Picloud { token: String, admin: String },
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Bare => "(a) bare axum SSE",
            Target::Picloud { .. } => "(b) picloud",
        }
    }

    fn stream_request(&self, addr: SocketAddr) -> String {
        let path = match self {
            Target::Bare => BARE_STREAM_PATH.to_owned(),
            Target::Picloud { token, .. } => {
                format!("/bench/_realtime?topics=bench&token={token}")
            }
        };
        format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        )
    }

    async fn publish(
        &self,
        http: &reqwest::Client,
        addr: SocketAddr,
        seq: u64,
    ) -> anyhow::Result<()> {
        let res = match self {
            Target::Bare => {
                http.post(format!("http://{addr}{BARE_PUBLISH_PATH}"))
                    .body(format!("{{\"seq\":{seq}}}"))
                    .send()
                    .await?
            }
            Target::Picloud { admin, .. } => {
                http.post(format!(
                    "http://{addr}/api/v1/apps/bench/realtime/topics/bench/publish"
                ))
                .bearer_auth(admin)
                .json(&json!({"payload": {"seq": seq}}))
                .send()
                .await?
            }
        };
        anyhow::ensure!(res.status().is_success(), "publish {seq}: {}", res.status());
        Ok(())
    }
}

/// Start the bare server.
pub fn start_bare(exe: &Path, work: &Path, n: usize) -> anyhow::Result<Server> {
    let mut cmd = Command::new(exe);
    cmd.arg("--serve-sse-baseline");
    Server::start(cmd, &work.join(format!("sse-baseline-{n}.log")))
}

/// Start `picloud serve` on a fresh SQLite data dir with app `bench`: topic `bench`
/// exposed, `GET /bench/token` minting a token for it; room for `n` streams.
fn start_picloud(bin: &Path, work: &Path, n: usize) -> anyhow::Result<(Server, Target)> {
    let data_dir = work.join(format!("realtime-{n}"));
    std::fs::create_dir_all(&data_dir)?;
    let admin = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let room = (n + 256).to_string();
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .env("PICLOUD_BIND", "127.0.0.1:0")
        .env("PICLOUD_DATA_DIR", &data_dir)
        .env("PICLOUD_ADMIN_TOKEN", &admin)
        .env("PICLOUD_HTTP__MAX_CONNECTIONS", &room)
        .env("PICLOUD_REALTIME__MAX_CONNECTIONS", &room)
        .env("PICLOUD_REALTIME__MAX_CONNECTIONS_PER_APP", &room)
        .env("RUST_LOG", "warn")
        .env_remove("PICLOUD_DATABASE_URL")
        .env_remove("PICLOUD_CONFIG")
        .current_dir(work);
    let server = Server::start(cmd, &work.join(format!("realtime-{n}.log")))?;
    anyhow::ensure!(server.addr.ip().is_loopback(), "picloud is not on loopback");
    let addr = server.addr;
    let token = runtime()?
        .block_on(async {
            let http = reqwest::Client::builder().no_proxy().build()?;
            let api = format!("http://{addr}/api/v1");
            let steps = [
                (reqwest::Method::POST, format!("{api}/apps"), Some(json!({"name": "bench"}))),
                (
                    reqwest::Method::PUT,
                    format!("{api}/apps/bench/scripts/token"),
                    Some(json!({"source": TOKEN_SCRIPT})),
                ),
                (
                    reqwest::Method::POST,
                    format!("{api}/apps/bench/triggers"),
                    Some(json!({"kind": "http", "method": "GET", "path": "/token", "script": "token"})),
                ),
                (reqwest::Method::PUT, format!("{api}/apps/bench/realtime/topics/bench"), None),
            ];
            for (method, url, body) in steps {
                let mut req = http.request(method.clone(), &url).bearer_auth(&admin);
                if let Some(body) = body {
                    req = req.json(&body);
                }
                let res = req.send().await?;
                anyhow::ensure!(
                    res.status().is_success(),
                    "{method} {url}: {}",
                    res.text().await.unwrap_or_default()
                );
            }
            let res = http.get(format!("http://{addr}/bench/token")).send().await?;
            anyhow::ensure!(res.status().is_success(), "GET /bench/token: {}", res.status());
            Ok(res.text().await?)
        })
        .with_context(|| format!("setting up the realtime app failed; stderr:\n{}", server.stderr_tail()))?;
    Ok((server, Target::Picloud { token, admin }))
}

/// What every stream of a pair shares with the bench.
struct Shared {
    base: Instant,
    /// Nanoseconds after `base` at which publish `seq` was sent (0: not yet).
    sent_at: Vec<AtomicU64>,
    /// Publishes per stream (burst and single), the stride of `latencies`.
    publishes: usize,
    /// Publish -> delivery in microseconds plus one (0: not delivered), at
    /// `stream * publishes + seq`: each stream writes only its own slots.
    latencies: Vec<AtomicU32>,
    /// Deliveries per publish, for the single publishes' pacing.
    per_seq: Vec<AtomicUsize>,
    delivered: AtomicU64,
    /// Nanoseconds after `base` of the newest delivery.
    last_delivery: AtomicU64,
    /// Streams whose answer head said 200.
    ready: AtomicUsize,
    /// Streams that failed or ended.
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn nanos(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn fail(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().expect("lock");
        first.get_or_insert(error);
    }

    /// The latencies (microseconds) of every delivery of publishes `seqs`.
    fn latencies_of(&self, seqs: std::ops::Range<usize>) -> Vec<u32> {
        self.latencies
            .chunks(self.publishes.max(1))
            .flat_map(|stream| &stream[seqs.clone()])
            .filter_map(|slot| slot.load(Ordering::Relaxed).checked_sub(1))
            .collect()
    }
}

/// `{"seq":N}` (in a `data:` line) -> N.
pub fn parse_seq(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("data:")?.trim_start();
    let rest = rest.strip_prefix("{\"seq\":")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// One stream: send the request, check the head, then read lines until the end.
async fn subscriber(addr: SocketAddr, request: Arc<str>, shared: Arc<Shared>, index: usize) {
    if let Err(error) = read_stream(addr, &request, &shared, index).await {
        shared.fail(format!("{error:#}"));
    } else {
        shared.fail("the stream ended".into());
    }
}

async fn read_stream(
    addr: SocketAddr,
    request: &str,
    shared: &Shared,
    index: usize,
) -> anyhow::Result<()> {
    let mut socket = TcpStream::connect(addr).await.context("connect")?;
    socket.write_all(request.as_bytes()).await?;
    let mut reader = BufReader::with_capacity(2048, socket);
    let mut line = String::with_capacity(128);
    reader.read_line(&mut line).await?;
    anyhow::ensure!(line.starts_with("HTTP/1.1 200"), "answered {}", line.trim());
    loop {
        line.clear();
        anyhow::ensure!(reader.read_line(&mut line).await? > 0, "closed in the head");
        if line == "\r\n" {
            break;
        }
    }
    shared.ready.fetch_add(1, Ordering::Relaxed);
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let Some(seq) = parse_seq(&line) else {
            continue;
        };
        let now = shared.nanos();
        let seq = usize::try_from(seq)?;
        let sent = shared
            .sent_at
            .get(seq)
            .map_or(0, |s| s.load(Ordering::Acquire));
        anyhow::ensure!(sent > 0, "event {seq} arrived before it was published");
        let micros = u32::try_from(now.saturating_sub(sent) / 1000).unwrap_or(u32::MAX - 1);
        let slot = &shared.latencies[index * shared.publishes + seq];
        anyhow::ensure!(
            slot.swap(micros + 1, Ordering::Relaxed) == 0,
            "event {seq} arrived twice"
        );
        shared.per_seq[seq].fetch_add(1, Ordering::Relaxed);
        shared.last_delivery.fetch_max(now, Ordering::Relaxed);
        shared.delivered.fetch_add(1, Ordering::Release);
    }
}

/// Measure one (target, N) pair on its server.
fn measure(
    rt: &tokio::runtime::Runtime,
    server: &mut Server,
    target: &Target,
    n: usize,
    plan: Plan,
) -> anyhow::Result<RealtimeRun> {
    let addr = server.addr;
    let pid = server.pid();
    let name = target.name();
    // Settle after setup, then the memory of the server with no stream.
    std::thread::sleep(Duration::from_secs(1));
    let rss_before_kib = procfs::rss_kib(pid)?;
    let publishes = usize::try_from(plan.publishes + plan.single)?;
    let shared = Arc::new(Shared {
        base: Instant::now(),
        sent_at: (0..publishes).map(|_| AtomicU64::new(0)).collect(),
        publishes,
        latencies: (0..n * publishes).map(|_| AtomicU32::new(0)).collect(),
        per_seq: (0..publishes).map(|_| AtomicUsize::new(0)).collect(),
        delivered: AtomicU64::new(0),
        last_delivery: AtomicU64::new(0),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        first_error: Mutex::new(None),
    });
    let request: Arc<str> = target.stream_request(addr).into();
    let run = rt.block_on(async {
        let mut streams = tokio::task::JoinSet::new();
        eprintln!("realtime {name}: opening {n} streams on http://{addr}");
        let opened = Instant::now();
        while streams.len() < n {
            let wave = (n - streams.len()).min(CONNECT_WAVE);
            for _ in 0..wave {
                let index = streams.len();
                streams.spawn(subscriber(
                    addr,
                    Arc::clone(&request),
                    Arc::clone(&shared),
                    index,
                ));
            }
            let want = streams.len();
            wait_until(&shared, Duration::from_secs(60), |s| {
                s.ready.load(Ordering::Relaxed) >= want
            })
            .await
            .with_context(|| {
                format!(
                    "{} of {want} streams open",
                    shared.ready.load(Ordering::Relaxed)
                )
            })?;
        }
        eprintln!("  {n} open in {:.1} s", opened.elapsed().as_secs_f64());
        // Let the server settle (its first heartbeat timers are armed), then its memory.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_after_kib = procfs::rss_kib(pid)?;

        let idle = if plan.idle_secs > 0 && n >= plan.idle_from {
            eprintln!("  idle: CPU of {n} idle streams over {} s", plan.idle_secs);
            let before = procfs::cpu_ticks(pid)?;
            let started = Instant::now();
            tokio::time::sleep(Duration::from_secs(plan.idle_secs)).await;
            let ticks = procfs::cpu_ticks(pid)?.saturating_sub(before);
            Some(IdleStreams {
                secs: started.elapsed().as_secs_f64(),
                ticks,
                ticks_per_sec: procfs::ticks_per_sec(),
            })
        } else {
            None
        };
        ensure_all_open(&shared, n)?;

        eprintln!("  burst: {} publishes to {n} streams", plan.publishes);
        let http = reqwest::Client::builder().no_proxy().build()?;
        let first_sent = shared.nanos();
        for seq in 0..plan.publishes {
            let i = usize::try_from(seq)?;
            shared.sent_at[i].store(shared.nanos().max(1), Ordering::Release);
            target.publish(&http, addr, seq).await?;
        }
        let total = plan.publishes * n as u64;
        wait_until(&shared, Duration::from_secs(120), |s| {
            s.delivered.load(Ordering::Acquire) >= total
        })
        .await
        .with_context(|| {
            format!(
                "{} of {total} deliveries",
                shared.delivered.load(Ordering::Acquire)
            )
        })?;
        ensure_all_open(&shared, n)?;
        let span = shared
            .last_delivery
            .load(Ordering::Relaxed)
            .saturating_sub(first_sent);

        if plan.single > 0 {
            eprintln!("  single: {} publishes, one at a time", plan.single);
        }
        let burst = usize::try_from(plan.publishes)?;
        for i in burst..publishes {
            shared.sent_at[i].store(shared.nanos().max(1), Ordering::Release);
            target.publish(&http, addr, i as u64).await?;
            wait_until(&shared, Duration::from_secs(60), |s| {
                s.per_seq[i].load(Ordering::Relaxed) >= n
            })
            .await
            .with_context(|| format!("single publish {i}"))?;
        }
        ensure_all_open(&shared, n)?;
        streams.abort_all();
        while streams.join_next().await.is_some() {}

        let bursts = Quantiles::of(shared.latencies_of(0..burst));
        let single = shared.latencies_of(burst..publishes);
        let delivered = shared.delivered.load(Ordering::Acquire);
        Ok::<_, anyhow::Error>(RealtimeRun {
            target: name,
            subscribers: n,
            rss_before_kib,
            rss_after_kib,
            publishes: plan.publishes,
            delivered,
            p50_ms: bursts.p50_ms,
            p99_ms: bursts.p99_ms,
            max_ms: bursts.max_ms,
            events_per_sec: total as f64 / (span as f64 / 1e9).max(1e-9),
            single: plan.single,
            fanout: Quantiles::of(single),
            idle,
        })
    })?;
    anyhow::ensure!(
        server.is_running(),
        "{name} exited during the run; its stderr:\n{}",
        server.stderr_tail()
    );
    Ok(run)
}

fn ensure_all_open(shared: &Shared, n: usize) -> anyhow::Result<()> {
    let failed = shared.failed.load(Ordering::Relaxed);
    anyhow::ensure!(
        failed == 0,
        "{failed} of {n} streams failed or ended; the first: {}",
        shared
            .first_error
            .lock()
            .expect("lock")
            .clone()
            .unwrap_or_default()
    );
    Ok(())
}

/// Wait until `done(shared)`, checking every 20 ms (a measuring client, not the server),
/// failing early when a stream failed.
async fn wait_until(
    shared: &Shared,
    within: Duration,
    done: impl Fn(&Shared) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !done(shared) {
        if shared.failed.load(Ordering::Relaxed) > 0 {
            let first = shared.first_error.lock().expect("lock").clone();
            anyhow::bail!("a stream failed: {}", first.unwrap_or_default());
        }
        anyhow::ensure!(Instant::now() < deadline, "not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// For each N: the bare server, then PiCloud (unless `picloud` is `None`), each fresh.
///
/// # Errors
/// When a server does not start, a stream fails, or deliveries are missing.
pub fn run(
    exe: &Path,
    picloud: Option<&Path>,
    work: &Path,
    subscribers: &[usize],
    plan: Plan,
) -> anyhow::Result<Vec<RealtimeRun>> {
    let needed = subscribers.iter().copied().max().unwrap_or(0) as u64 + 256;
    let limit = raise_open_files()?;
    anyhow::ensure!(
        limit >= needed,
        "the open-file limit is {limit}, {needed} are needed for the largest N: raise the hard limit (ulimit -Hn)"
    );
    // The client: two workers, like the servers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut runs = Vec::new();
    for &n in subscribers {
        let mut bare = start_bare(exe, work, n)?;
        runs.push(measure(&rt, &mut bare, &Target::Bare, n, plan)?);
        drop(bare);
        if let Some(bin) = picloud {
            let (mut server, target) = start_picloud(bin, work, n)?;
            runs.push(measure(&rt, &mut server, &target, n, plan)?);
        }
    }
    Ok(runs)
}

/// Raise this process's soft open-file limit to its hard limit (servers started from here
/// inherit it); the limit now in force.
///
/// # Errors
/// When the limit cannot be read or set.
pub fn raise_open_files() -> anyhow::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        anyhow::ensure!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0,
            "getrlimit failed"
        );
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            anyhow::ensure!(
                libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) == 0,
                "setrlimit failed"
            );
        }
    }
    Ok(limit.rlim_cur)
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
    fn the_sequence_number_is_read_from_a_data_line_only() {
        assert_eq!(parse_seq("data: {\"seq\":42}\n"), Some(42));
        assert_eq!(parse_seq("data:{\"seq\":7}\r\n"), Some(7));
        assert_eq!(parse_seq("id: 3\n"), None);
        assert_eq!(parse_seq(": hb\n"), None);
        assert_eq!(parse_seq("data: {\"seq\":}\n"), None);
        assert_eq!(parse_seq("data: {\"other\":1}\n"), None);
    }

    #[test]
    fn quantiles_pick_the_nearest_rank_and_deliveries_are_read_per_phase() {
        let q = Quantiles::of((1..=100).rev().map(|ms| ms * 1000).collect());
        assert!((q.p50_ms - 50.0).abs() < 1e-9);
        assert!((q.p99_ms - 99.0).abs() < 1e-9);
        assert!((q.max_ms - 100.0).abs() < 1e-9);
        assert!((Quantiles::of(Vec::new()).max_ms).abs() < 1e-9);

        // Two streams, three publishes: slot = stream * 3 + seq, microseconds + 1.
        let shared = Shared {
            base: Instant::now(),
            sent_at: Vec::new(),
            publishes: 3,
            latencies: [11, 21, 0, 12, 22, 32].map(AtomicU32::new).into(),
            per_seq: Vec::new(),
            delivered: AtomicU64::new(0),
            last_delivery: AtomicU64::new(0),
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            first_error: Mutex::new(None),
        };
        assert_eq!(shared.latencies_of(0..2), vec![10, 20, 11, 21]);
        // Stream 0 never got publish 2: no latency, not a zero.
        assert_eq!(shared.latencies_of(2..3), vec![31]);
    }

    #[test]
    fn per_connection_memory_is_what_the_streams_added_over_their_count() {
        let run = RealtimeRun {
            target: "x",
            subscribers: 1000,
            rss_before_kib: 20_000,
            rss_after_kib: 39_000,
            publishes: 1,
            delivered: 1000,
            p50_ms: 1.0,
            p99_ms: 2.0,
            max_ms: 3.0,
            events_per_sec: 1.0,
            single: 0,
            fanout: Quantiles::default(),
            idle: None,
        };
        assert!((run.kib_per_connection() - 19.0).abs() < 1e-9);
        let idle = IdleStreams {
            secs: 30.0,
            ticks: 6,
            ticks_per_sec: 100,
        };
        assert!((idle.cpu_pct() - 0.2).abs() < 1e-9);
    }
}
