//! Cluster binaries at start: each refuses to run without PostgreSQL, with an error that
//! says what to set, before it opens or creates anything.
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Start the binary at `bin` (named `name` in its temp directory) without a database URL,
/// with a SQLite one and with an empty one: each time it must exit 1 saying it needs
/// PostgreSQL and how to set `PICLOUD_DATABASE_URL`, and create nothing.
///
/// # Panics
/// When a start is not refused that way.
pub fn assert_refuses_without_postgres(bin: &str, name: &str) {
    let dir = std::env::temp_dir().join(format!("{name}-start-{}", std::process::id()));
    for url in [None, Some("sqlite://picloud.db"), Some("")] {
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PICLOUD_BIND", "127.0.0.1:0")
            .env("PICLOUD_DATA_DIR", &dir)
            .env("PICLOUD_CONFIG", dir.join("absent.toml"))
            .env("PICLOUD_ADMIN_TOKEN", "pct_cluster_start_test_token");
        if let Some(url) = url {
            cmd.env("PICLOUD_DATABASE_URL", url);
        }
        let out = refused(cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{url:?}: {stderr}");
        assert!(
            stderr.contains("needs PostgreSQL")
                && stderr.contains("PICLOUD_DATABASE_URL=postgres://"),
            "{url:?}: {stderr}"
        );
        assert!(!dir.exists(), "nothing was created before the refusal");
    }
}

/// Run `cmd` and collect its output once it exits; a process still running after 30 s
/// started instead of refusing: it is killed and the test fails.
fn refused(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the binary");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process started instead of refusing");
        }
        // A child's exit has no signal to wait on here: poll its status briefly.
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}
