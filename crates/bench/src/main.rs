//! `picloud-bench`: in one run on loopback, every figure of the performance targets:
//! events end to end on SQLite and PostgreSQL for three handlers (burst, long queue,
//! paced delay); (a) a bare axum hello-world against (b) a deployed hello-world script and
//! (c) a script doing one `kv::set` on the real `picloud serve`, with the same wrk
//! settings, in interleaved rounds, with instructions per request (callgrind); deploy to
//! first response under load; idle CPU and resident memory. Prints one table, each figure
//! against its target.
//!
//! - `baseline`: the axum server, run as `picloud-bench --serve-baseline` so both servers
//!   are separate processes with the same runtime setup.
//! - `child`: starts a server process, reads its `listening on` line, kills it on drop.
//! - `picloud`: starts `picloud serve` on a temp data dir and deploys the hello script.
//! - `wrk`: runs wrk and parses requests/s, p50 and p99.
//! - `procfs`: CPU ticks and VmRSS of a process.
//! - `realtime`: N SSE subscribers of one topic, PiCloud against a bare axum SSE broadcast
//!   server (`--serve-sse-baseline`): memory per stream, idle CPU, fan-out latency.
//! - `report`: the table and the targets.
mod baseline; // the bare axum server
mod callgrind; // instructions per request under callgrind
mod child; // server processes, killed on drop
mod deploy; // deploy to first response of the new version, under load
mod events; // events/s and publish->handler delay on SQLite and PostgreSQL
mod picloud; // picloud serve + admin API setup
mod procfs; // /proc/PID/{stat,status}
mod realtime; // SSE fan-out against a bare axum SSE broadcast server
mod report; // the comparison table and targets
mod wrk; // load generator and its report

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use crate::child::Server;
use crate::report::{Idle, Report};
use crate::wrk::Load;

#[derive(Parser, Debug)]
#[command(
    name = "picloud-bench",
    about = "PiCloud hello-world endpoint vs a bare axum handler, plus idle CPU and RSS"
)]
struct Args {
    /// Run the baseline server only (used by the bench itself).
    #[arg(long, hide = true)]
    serve_baseline: bool,
    /// Seconds of load per target and round.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Rounds of (a) then (b); the ratio is the median of the rounds' ratios, so a burst
    /// of noise on a shared machine moves one round, not the result.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Open connections (wrk -c).
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// wrk threads (wrk -t).
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Seconds of untimed load before each measured run.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Length of the idle CPU window.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Skip the idle CPU / RSS measurement.
    #[arg(long)]
    skip_idle: bool,
    /// Only measure the baseline (e.g. before `picloud` is built).
    #[arg(long)]
    baseline_only: bool,
    /// The picloud binary (default: `picloud` next to this executable).
    #[arg(long)]
    picloud: Option<PathBuf>,
    /// Exit non-zero when a target is missed.
    #[arg(long)]
    strict: bool,
    /// Events published in the events burst, per backend and handler.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Bursts per backend and handler, one after the other on one server; the figure is
    /// the median of their rates.
    #[arg(long, default_value_t = 3)]
    burst_rounds: u32,
    /// Events queued before their consumer exists, per backend and handler (0: skip).
    #[arg(long, default_value_t = 100_000)]
    queued: u64,
    /// Events published at 200/s for the unsaturated delay, per backend.
    #[arg(long, default_value_t = 1_000)]
    paced: u64,
    /// Handlers to measure (noop, incr, set); default all three.
    #[arg(long, value_delimiter = ',')]
    handlers: Vec<String>,
    /// Backends to measure (sqlite, postgres); default both.
    #[arg(long, value_delimiter = ',')]
    backends: Vec<String>,
    /// Events run under callgrind per backend and handler, for instructions per event
    /// (0: skip).
    #[arg(long, default_value_t = 0)]
    callgrind_events: u64,
    /// Where callgrind's dumps are written and kept, for `callgrind_annotate` (default: a
    /// temp dir removed at the end): instructions per event and per request.
    #[arg(long)]
    callgrind_dir: Option<PathBuf>,
    /// Seconds of load under callgrind for instructions per request (0: skip).
    #[arg(long, default_value_t = 5)]
    callgrind_secs: u64,
    /// Also count instructions per request of the `kv::set` endpoint (c) under callgrind,
    /// on the same server as hello's, right after it.
    #[arg(long)]
    callgrind_put: bool,
    /// Redeploys for the deploy-to-first-response figure (0: skip).
    #[arg(long, default_value_t = 100)]
    redeploys: usize,
    /// Skip the events benchmark.
    #[arg(long)]
    skip_events: bool,
    /// Skip the HTTP benchmark (and idle), run only the events benchmark.
    #[arg(long)]
    skip_http: bool,
    /// Run the bare SSE broadcast server only (used by the bench itself).
    #[arg(long, hide = true)]
    serve_sse_baseline: bool,
    /// Skip the realtime benchmark.
    #[arg(long)]
    skip_realtime: bool,
    /// Run only the realtime benchmark.
    #[arg(long)]
    realtime_only: bool,
    /// Subscriber counts of the realtime benchmark.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000usize, 10_000])]
    subscribers: Vec<usize>,
    /// Publishes in the realtime burst.
    #[arg(long, default_value_t = 50)]
    realtime_publishes: u64,
    /// Single realtime publishes after the burst, each once the one before reached every
    /// stream: one publish's fan-out latency.
    #[arg(long, default_value_t = 20)]
    realtime_single: u64,
    /// Length of the idle-streams CPU window at the largest subscriber count (0: skip).
    #[arg(long, default_value_t = 30)]
    realtime_idle_secs: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if args.serve_baseline {
        baseline::serve()
    } else if args.serve_sse_baseline {
        realtime::serve_baseline()
    } else {
        bench(&args).and_then(|report| {
            println!();
            println!("{}", report.render());
            if args.strict && !report.all_targets_met() {
                anyhow::bail!("a target was missed (--strict)");
            }
            Ok(())
        })
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Every server started so far was killed when its guard dropped.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: &Args) -> anyhow::Result<Report> {
    anyhow::ensure!(args.duration > 0, "--duration must be at least 1 second");
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(
        args.threads > 0 && args.threads <= args.connections,
        "--threads must be between 1 and --connections"
    );
    let skip_http = args.skip_http || args.realtime_only;
    if !skip_http {
        wrk::ensure_installed()?;
    }
    let load = Load {
        threads: args.threads,
        connections: args.connections,
        duration_secs: args.duration,
    };
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let picloud_bin = match &args.picloud {
        Some(path) => path.clone(),
        None => exe.with_file_name("picloud"),
    };
    if !args.baseline_only && !picloud_bin.is_file() {
        anyhow::bail!(
            "{} not found: build it with `cargo build --release -p picloud` (or pass --picloud PATH, or --baseline-only)",
            picloud_bin.display()
        );
    }
    let work = tempfile::tempdir().context("cannot create a temp dir")?;
    let mut report = Report::new(load);

    if !args.skip_realtime {
        anyhow::ensure!(
            args.realtime_publishes > 0,
            "--realtime-publishes must be at least 1"
        );
        anyhow::ensure!(
            args.subscribers.iter().all(|&n| n > 0),
            "--subscribers must be positive"
        );
        let largest = args.subscribers.iter().copied().max().unwrap_or(0);
        report.realtime = realtime::run(
            &exe,
            (!args.baseline_only).then_some(picloud_bin.as_path()),
            work.path(),
            &args.subscribers,
            realtime::Plan {
                publishes: args.realtime_publishes,
                single: args.realtime_single,
                idle_secs: args.realtime_idle_secs,
                idle_from: largest,
            },
        )?;
    }
    if args.realtime_only {
        return Ok(report);
    }

    if !args.skip_events && !args.baseline_only {
        let handlers = if args.handlers.is_empty() {
            events::Handler::ALL.to_vec()
        } else {
            args.handlers
                .iter()
                .map(|h| match h.as_str() {
                    "noop" => Ok(events::Handler::Noop),
                    "incr" => Ok(events::Handler::Incr),
                    "set" => Ok(events::Handler::Set),
                    other => anyhow::bail!("unknown handler {other} (noop, incr, set)"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?
        };
        let callgrind = if args.callgrind_events > 0 && !callgrind::available() {
            eprintln!(
                "valgrind is not installed: no instructions per event (apt-get install -y valgrind)"
            );
            0
        } else {
            args.callgrind_events
        };
        let plan = events::Plan {
            burst: args.events.max(1),
            burst_rounds: args.burst_rounds.max(1),
            queued: args.queued,
            paced: args.paced,
            callgrind,
        };
        let dumps = match &args.callgrind_dir {
            Some(dir) => dir.clone(),
            None => work.path().join("callgrind"),
        };
        std::fs::create_dir_all(&dumps).context("cannot create the callgrind dump dir")?;
        let dumps = events::CallgrindDir(&dumps);
        let wants = |b: &str| args.backends.is_empty() || args.backends.iter().any(|x| x == b);
        if wants("sqlite") {
            let (runs, paced) = events::run(
                &picloud_bin,
                work.path(),
                "sqlite",
                &mut || Ok(None),
                plan,
                &handlers,
                dumps,
            )?;
            report.events.extend(runs);
            report.paced.push(paced);
        }
        if wants("postgres") {
            // Fresh schemas on PICLOUD_TEST_DATABASE_URL (default: the local `test`
            // database), dropped when these handles drop, after the run.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let mut schemas = Vec::new();
            let (runs, paced) = events::run(
                &picloud_bin,
                work.path(),
                "postgres",
                &mut || {
                    let schema = rt.block_on(storage::testing::TestUrl::postgres());
                    let url = schema.url.clone();
                    schemas.push(schema);
                    Ok(Some(url))
                },
                plan,
                &handlers,
                dumps,
            )?;
            report.events.extend(runs);
            report.paced.push(paced);
        }
    }
    if skip_http {
        return Ok(report);
    }

    // (a) the baseline, in its own process, and (b) the real server with the hello script
    // deployed; both stay up and are loaded in turn, one round after another.
    let mut cmd = Command::new(&exe);
    cmd.arg("--serve-baseline");
    let baseline_server = Server::start(cmd, &work.path().join("baseline.log"))?;
    eprintln!("baseline: axum on http://{}", baseline_server.addr);
    picloud::wait_for_body(baseline_server.addr, baseline::PATH, baseline::BODY)?;
    let (mut picloud_server, token) = if args.baseline_only {
        (None, String::new())
    } else {
        let (server, token) = picloud::start(&picloud_bin, work.path())?;
        eprintln!(
            "picloud: {} on http://{}",
            picloud_bin.display(),
            server.addr
        );
        (Some(server), token)
    };
    // Resident memory of the fresh server, before any load.
    let rss_before_kib = match &picloud_server {
        Some(server) if !args.skip_idle => {
            std::thread::sleep(Duration::from_secs(2));
            Some(procfs::rss_kib(server.pid())?)
        }
        _ => None,
    };

    let rounds = args.rounds.max(1);
    let mut baseline_runs = Vec::new();
    let mut picloud_runs = Vec::new();
    let mut kv_runs = Vec::new();
    for round in 1..=rounds {
        eprintln!("round {round} of {rounds}");
        let a = measure(&baseline_server, baseline::PATH, load, args.warmup)?;
        if let Some(server) = &mut picloud_server {
            let b = measure(server, picloud::PATH, load, args.warmup)?;
            let c = measure(server, picloud::PUT_PATH, load, args.warmup)?;
            anyhow::ensure!(
                server.is_running(),
                "picloud exited during the load; its stderr:\n{}",
                server.stderr_tail()
            );
            if a.requests_per_sec > 0.0 {
                report
                    .round_ratios
                    .push(b.requests_per_sec / a.requests_per_sec);
            }
            if b.requests_per_sec > 0.0 {
                report
                    .kv_ratios
                    .push(c.requests_per_sec / b.requests_per_sec);
            }
            picloud_runs.push(b);
            kv_runs.push(c);
        }
        baseline_runs.push(a);
    }
    drop(baseline_server);
    report.baseline = report::median_run(baseline_runs);
    report.picloud = report::median_run(picloud_runs);
    report.kv = report::median_run(kv_runs);

    if !args.baseline_only && args.callgrind_secs > 0 {
        if callgrind::available() {
            let (a, b, c) = instructions(
                &exe,
                &picloud_bin,
                work.path(),
                args.callgrind_dir.as_deref(),
                args.callgrind_secs,
                args.callgrind_put,
            )?;
            report.instructions.push((a, b));
            report.put_instructions.extend(c);
        } else {
            eprintln!(
                "valgrind is not installed: no instruction counts (apt-get install -y valgrind)"
            );
        }
    }

    if let Some(server) = &picloud_server
        && args.redeploys > 0
    {
        eprintln!("redeploying {} times under load", args.redeploys);
        report.redeploys = Some(deploy::run(
            server.addr,
            &token,
            args.redeploys,
            (args.connections / 4).max(1),
        )?);
    }

    if let Some(server) = &picloud_server
        && !args.skip_idle
    {
        let mut idle = idle(server, args.idle_secs)?;
        idle.rss_before_kib = rss_before_kib;
        report.idle = Some(idle);
    }
    Ok(report)
}

/// Instructions per request of the baseline and of picloud's hello (and with `put`, of its
/// `kv::set` endpoint, on the same server after hello), each server started again under
/// callgrind.
fn instructions(
    exe: &std::path::Path,
    picloud_bin: &std::path::Path,
    work: &std::path::Path,
    keep_in: Option<&std::path::Path>,
    secs: u64,
    put: bool,
) -> anyhow::Result<(f64, f64, Option<f64>)> {
    let dir = keep_in.map_or_else(|| work.join("callgrind"), std::path::Path::to_path_buf);
    std::fs::create_dir_all(&dir)?;
    let mut cmd = Command::new(exe);
    cmd.arg("--serve-baseline");
    eprintln!("instructions: the baseline under callgrind");
    let server = Server::start(callgrind::wrap(&cmd, &dir), &work.join("baseline-cg.log"))?;
    picloud::wait_for_body(server.addr, baseline::PATH, baseline::BODY)?;
    let a = callgrind::per_request(
        &server,
        &mut callgrind::Counter::new(&server, &dir),
        baseline::PATH,
        secs,
    )?;
    drop(server);
    eprintln!("instructions: picloud under callgrind");
    let (server, _) = picloud::start_with(picloud_bin, work, "picloud-cg", |cmd| {
        cmd.env(
            "PICLOUD_HTTP__RECORDED_SUCCESSES_PER_SEC",
            callgrind::RECORDED_PER_SEC,
        );
        callgrind::wrap(cmd, &dir)
    })?;
    let mut counter = callgrind::Counter::new(&server, &dir);
    let b = callgrind::per_request(&server, &mut counter, picloud::PATH, secs)?;
    let c = if put {
        eprintln!("instructions: picloud's kv::set endpoint under callgrind");
        Some(callgrind::per_request(
            &server,
            &mut counter,
            picloud::PUT_PATH,
            secs,
        )?)
    } else {
        None
    };
    Ok((a, b, c))
}

/// One measured wrk run, after its warm-up.
fn measure(server: &Server, path: &str, load: Load, warmup: u64) -> anyhow::Result<wrk::WrkResult> {
    if warmup > 0 {
        eprintln!("  warming up for {warmup} s");
        wrk::run(
            server.addr,
            path,
            Load {
                duration_secs: warmup,
                ..load
            },
        )?;
    }
    eprintln!(
        "  wrk -t{} -c{} -d{}s --latency http://{}{path}",
        load.threads, load.connections, load.duration_secs, server.addr
    );
    wrk::run(server.addr, path, load)
}

/// Wait 3 s after the load, then measure CPU time over `secs` and read VmRSS.
fn idle(server: &Server, secs: u64) -> anyhow::Result<Idle> {
    anyhow::ensure!(secs > 0, "--idle-secs must be at least 1");
    let pid = server.pid();
    eprintln!("idle: settling 3 s, then measuring CPU for {secs} s");
    std::thread::sleep(Duration::from_secs(3));
    let threads = procfs::threads(pid)?;
    let before = procfs::cpu_ticks(pid)?;
    let started = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let after = procfs::cpu_ticks(pid)?;
    let wall = started.elapsed().as_secs_f64();
    let woken = procfs::woken(&threads, &procfs::threads(pid)?);
    let hz = procfs::ticks_per_sec();
    Ok(Idle {
        window_secs: wall,
        cpu_ticks: after.saturating_sub(before),
        ticks_per_sec: hz,
        rss_kib: procfs::rss_kib(pid)?,
        rss_before_kib: None,
        woken,
    })
}
