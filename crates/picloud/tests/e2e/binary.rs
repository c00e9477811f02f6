//! The real `picloud` binary: first start prints a token, the CLI does the walkthrough,
//! SIGTERM stops it cleanly, and a restart keeps everything.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_picloud");

pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) url: String,
    printed_token: Option<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `picloud serve` on a free loopback port and wait for its "listening on" line.
pub(crate) fn start(data_dir: &Path, envs: &[(&str, &str)]) -> Running {
    run(Command::new(BIN), data_dir, envs)
}

/// `start`, with the open-file limit lowered to `files` first (`ulimit -n`).
pub(crate) fn start_with_file_limit(data_dir: &Path, envs: &[(&str, &str)], files: u32) -> Running {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n {files} && exec \"$0\" \"$@\""))
        .arg(BIN);
    run(cmd, data_dir, envs)
}

#[allow(clippy::zombie_processes)] // `Running::drop` kills and waits
fn run(mut cmd: Command, data_dir: &Path, envs: &[(&str, &str)]) -> Running {
    cmd.arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PICLOUD_BIND", "127.0.0.1:0")
        .env("PICLOUD_DATA_DIR", data_dir)
        .env("PICLOUD_CONFIG", data_dir.join("absent.toml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start picloud serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed_token = None;
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("picloud printed its address within 60 s");
        if let Some(token) = line.strip_prefix("admin token (shown once, keep it): ") {
            printed_token = Some(token.trim().to_owned());
        }
        if let Some(url) = line.strip_prefix("listening on ") {
            return Running {
                child,
                url: url.trim().to_owned(),
                printed_token,
            };
        }
    }
}

fn cli(url: &str, token: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("PICLOUD_URL", url)
        .env("PICLOUD_TOKEN", token)
        .output()
        .expect("run the picloud CLI");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn terminate(mut running: Running) {
    let pid = running.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    // Wait for the exit itself (a thread blocked in wait), not in slices of time.
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let status = running.child.wait();
        let _ = exited.send(status);
    });
    let status = exit
        .recv_timeout(Duration::from_secs(20))
        .expect("picloud stopped within 20 s of SIGTERM")
        .unwrap();
    assert!(
        status.success(),
        "picloud exited cleanly on SIGTERM: {status}"
    );
}

fn walkthrough(data_dir: &Path, envs: &[(&str, &str)], token: Option<&str>) {
    let running = start(data_dir, envs);
    let token = token
        .map(str::to_owned)
        .or_else(|| running.printed_token.clone())
        .expect("first start printed an admin token");
    let url = running.url.clone();

    let (ok, out) = cli(&url, &token, &["apps", "create", "shop"]);
    assert!(ok, "{out}");
    let script = data_dir.join("hello.rhai");
    std::fs::write(
        &script,
        "let name = request.query.name ?? \"world\";\n\"Hello, \" + name + \"!\"\n",
    )
    .unwrap();
    let (ok, out) = cli(
        &url,
        &token,
        &[
            "deploy",
            "shop",
            script.to_str().unwrap(),
            "--route",
            "GET /hello",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("version 1"), "{out}");

    let (ok, out) = cli(&url, &token, &["invoke", "shop", "/hello?name=Pi"]);
    assert!(ok, "{out}");
    assert!(out.contains("Hello, Pi!"), "{out}");

    let (ok, out) = cli(&url, "pct_wrong", &["apps", "list"]);
    assert!(!ok, "a wrong token fails: {out}");

    // The record is written in the background; give the CLI a few tries (a bounded
    // retry of a blocking command: the sync twin of `testkit::eventually`).
    let mut seen = String::new();
    for _ in 0..50 {
        let (ok, out) = cli(&url, &token, &["logs", "shop"]);
        assert!(ok, "{out}");
        seen = out;
        if seen.contains("hello") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen.contains("hello") && seen.contains("ok"), "{seen}");
    terminate(running);

    // A restart keeps the apps, scripts, routes and tokens, and prints no new token.
    let running = start(data_dir, envs);
    assert!(running.printed_token.is_none());
    let (ok, out) = cli(&running.url, &token, &["invoke", "shop", "/hello"]);
    assert!(ok && out.contains("Hello, world!"), "{out}");
    terminate(running);
}

#[test]
fn the_binary_runs_the_readme_walkthrough_on_sqlite_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    walkthrough(dir.path(), &[], None);
    assert!(
        dir.path().join("picloud.db").exists(),
        "SQLite lives in the data directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_switches_to_postgres_with_picloud_database_url() {
    let db = storage::testing::TestUrl::postgres().await;
    let url = db.url.clone();
    let dir = tempfile::tempdir().unwrap();
    let token = "pct_binary_test_admin_token";
    let path = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        walkthrough(
            &path,
            &[
                ("PICLOUD_DATABASE_URL", &url),
                ("PICLOUD_ADMIN_TOKEN", token),
            ],
            Some(token),
        );
        assert!(
            !path.join("picloud.db").exists(),
            "no SQLite file when PostgreSQL is used"
        );
    })
    .await
    .unwrap();
}
