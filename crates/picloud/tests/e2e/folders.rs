//! Apps as folders through the real binary: `picloud push` (plan, dry run, prune, compile
//! errors, missing secrets, unknown keys), `picloud pull`, `picloud dev` driven by file
//! edits, and the example app in `examples/` pushed and called. On SQLite and PostgreSQL
//! where the server's answers matter.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::binary::{Running, start};

const BIN: &str = env!("CARGO_BIN_EXE_picloud");
const TOKEN: &str = "pct_folders_test_admin_token";

/// The server, on SQLite (`None`) or the PostgreSQL at `url`.
fn server(data_dir: &Path, database_url: Option<&str>) -> Running {
    let mut envs = vec![("PICLOUD_ADMIN_TOKEN", TOKEN)];
    if let Some(url) = database_url {
        envs.push(("PICLOUD_DATABASE_URL", url));
    }
    start(data_dir, &envs)
}

/// What one CLI run printed, and its exit code.
struct Out {
    code: i32,
    text: String,
}

/// Run the CLI against `url` with extra environment variables (secret values).
fn cli_env(url: &str, args: &[&str], envs: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PICLOUD_URL", url)
        .env("PICLOUD_TOKEN", TOKEN)
        .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the picloud CLI");
    Out {
        code: out.status.code().unwrap_or(-1),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn cli(url: &str, args: &[&str]) -> Out {
    cli_env(url, args, &[])
}

/// A CLI call that must succeed, answering JSON (`--json`).
fn json(url: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = cli(url, &all);
    assert_eq!(out.code, 0, "{args:?}: {}", out.text);
    serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", out.text))
}

fn apps(url: &str) -> Vec<String> {
    json(url, &["apps", "list"])["apps"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn scripts(url: &str, app: &str) -> Vec<String> {
    json(url, &["scripts", "list", app])["scripts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn versions(url: &str, app: &str, script: &str) -> usize {
    json(url, &["scripts", "versions", app, script])["versions"]
        .as_array()
        .map_or(0, Vec::len)
}

/// Call an app's endpoint through `picloud invoke`; the printed text.
fn invoke(url: &str, app: &str, path: &str, extra: &[&str]) -> String {
    let mut args = vec!["invoke", app, path];
    args.extend_from_slice(extra);
    let out = cli(url, &args);
    assert_eq!(out.code, 0, "invoke {path}: {}", out.text);
    out.text
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

const MANIFEST: &str = r#"app = "shop"
secrets = ["API_KEY"]

[[http]]
route = "GET /hello"
script = "hello"

[[http]]
route = "POST /orders/:sku"
script = "order"
idempotency = 3600

[[topic]]
topic = "orders"
script = "count"
max_attempts = 3

[[cron]]
schedule = "0 0 3 * * *"
timezone = "Europe/Berlin"
script = "count"

[config]
greeting = "Hello"
limit = 5

[realtime]
topics = ["orders"]
cors = ["https://shop.example"]

[limits]
timeout_ms = 2000

[script_limits.hello]
timeout_ms = 1500
"#;

const HELLO: &str = "let name = request.query.name ?? \"world\";\nconfig::get(\"greeting\") + \", \" + name + \"!\"\n";

/// The shop folder: hello, order, count (in a subfolder).
fn shop(dir: &Path) {
    write(dir, "picloud.toml", MANIFEST);
    write(dir, "hello.rhai", HELLO);
    write(
        dir,
        "order.rhai",
        "pubsub::publish(\"orders\", #{ sku: request.params.sku });\n\"queued \" + secrets::get(\"API_KEY\").len()\n",
    );
    write(
        dir,
        "handlers/count.rhai",
        "kv::incr(\"orders:\" + event.payload.sku, 1);\n",
    );
}

fn push_scenario(database_url: Option<&str>) {
    let data = tempfile::tempdir().unwrap();
    let running = server(data.path(), database_url);
    let url = running.url.clone();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("shop");
    shop(&dir);
    let d = dir.to_str().unwrap();
    let secret = [("API_KEY", "k-12345")];

    // A dry run into an empty server: the plan, exit 2, nothing applied.
    let out = cli_env(&url, &["push", d, "--dry-run"], &secret);
    assert_eq!(out.code, 2, "{}", out.text);
    assert!(
        out.text.contains("app shop (new: it will be created)"),
        "{}",
        out.text
    );
    assert!(
        out.text.contains("+ hello (hello.rhai, new)"),
        "{}",
        out.text
    );
    assert!(
        out.text.contains("+ count (handlers/count.rhai, new)"),
        "{}",
        out.text
    );
    assert!(
        out.text
            .contains("+ http POST /orders/:sku -> order (idempotency keys 3600s)"),
        "{}",
        out.text
    );
    assert!(apps(&url).is_empty(), "a dry run applies nothing");

    // Without the secret's value: the plan says which, nothing is applied.
    let out = cli(&url, &["push", d, "--yes"]);
    assert_eq!(out.code, 1, "{}", out.text);
    assert!(
        out.text.contains("no value for secret API_KEY"),
        "{}",
        out.text
    );
    assert!(out.text.contains("nothing was applied"), "{}", out.text);
    assert!(apps(&url).is_empty());

    // A compile error in one script: file:line:column, nothing applied (not even the app).
    write(&dir, "handlers/count.rhai", "let a = 1;\nlet b = ;\n");
    let out = cli_env(&url, &["push", d, "--yes"], &secret);
    assert_eq!(out.code, 1, "{}", out.text);
    assert!(out.text.contains("handlers/count.rhai:2:"), "{}", out.text);
    assert!(apps(&url).is_empty(), "a compile error applies nothing");
    write(
        &dir,
        "handlers/count.rhai",
        "kv::incr(\"orders:\" + event.payload.sku, 1);\n",
    );

    // Without a terminal and without --yes: nothing applied.
    let out = cli_env(&url, &["push", d], &secret);
    assert_eq!(out.code, 1, "{}", out.text);
    assert!(out.text.contains("--yes"), "{}", out.text);
    assert!(apps(&url).is_empty());

    // The push: everything is there and works.
    let out = cli_env(&url, &["push", d, "--yes"], &secret);
    assert_eq!(out.code, 0, "{}", out.text);
    assert!(out.text.contains("created app shop"), "{}", out.text);
    assert_eq!(
        invoke(&url, "shop", "/hello?name=Pi", &[])
            .trim_end()
            .lines()
            .last(),
        Some("Hello, Pi!")
    );
    assert!(invoke(&url, "shop", "/orders/42", &["-X", "POST"]).contains("queued 7"));
    let triggers = json(&url, &["triggers", "list", "shop"]);
    assert_eq!(
        triggers["triggers"].as_array().map(Vec::len),
        Some(4),
        "{triggers}"
    );
    assert_eq!(json(&url, &["config", "get", "shop", "limit"])["value"], 5);
    assert_eq!(
        json(&url, &["secrets", "list", "shop"])["secrets"],
        serde_json::json!(["API_KEY"])
    );
    assert_eq!(
        json(&url, &["limits", "show", "shop"])["overrides"]["timeout_ms"],
        2000
    );
    assert_eq!(
        json(&url, &["limits", "show", "shop", "--script", "hello"])["overrides"]["timeout_ms"],
        1500
    );
    assert_eq!(
        json(&url, &["realtime", "cors", "shop"])["origins"],
        serde_json::json!(["https://shop.example"])
    );
    let topics = json(&url, &["realtime", "list", "shop"]);
    assert_eq!(topics["topics"][0]["topic"], "orders", "{topics}");

    // A second push is a no-op: no new version of anything (no secret value needed now).
    let out = cli(&url, &["push", d, "--yes"]);
    assert_eq!(out.code, 0, "{}", out.text);
    assert!(out.text.trim_end().ends_with("no changes"), "{}", out.text);
    let out = cli(&url, &["push", d, "--dry-run"]);
    assert_eq!(out.code, 0, "a dry run in step exits 0: {}", out.text);
    for s in ["hello", "order", "count"] {
        assert_eq!(versions(&url, "shop", s), 1, "{s}");
    }

    // One changed file: exactly one new version, of that script only.
    write(&dir, "hello.rhai", &HELLO.replace("world", "there"));
    let out = cli(&url, &["push", d, "--yes"]);
    assert_eq!(out.code, 0, "{}", out.text);
    assert!(
        out.text.contains("~ hello (hello.rhai: +1 -1 lines)"),
        "{}",
        out.text
    );
    assert!(out.text.contains("1 change"), "{}", out.text);
    assert_eq!(versions(&url, "shop", "hello"), 2);
    assert_eq!(versions(&url, "shop", "order"), 1);
    assert_eq!(versions(&url, "shop", "count"), 1);
    assert!(invoke(&url, "shop", "/hello", &[]).contains("Hello, there!"));

    // Gone from the folder: kept without --prune, deleted with it.
    std::fs::remove_file(dir.join("handlers/count.rhai")).unwrap();
    let trimmed = MANIFEST
        .replace("[[topic]]\ntopic = \"orders\"\nscript = \"count\"\nmax_attempts = 3\n", "")
        .replace("[[cron]]\nschedule = \"0 0 3 * * *\"\ntimezone = \"Europe/Berlin\"\nscript = \"count\"\n", "")
        .replace("limit = 5\n", "");
    write(&dir, "picloud.toml", &trimmed);
    let out = cli(&url, &["push", d, "--yes"]);
    assert_eq!(out.code, 0, "{}", out.text);
    assert!(
        out.text
            .contains("= count (not in the folder: kept; --prune deletes it)"),
        "{}",
        out.text
    );
    assert!(out.text.trim_end().ends_with("no changes"), "{}", out.text);
    assert!(scripts(&url, "shop").contains(&"count".to_owned()));
    let out = cli(&url, &["push", d, "--dry-run", "--prune"]);
    assert_eq!(out.code, 2, "{}", out.text);
    let out = cli(&url, &["push", d, "--yes", "--prune"]);
    assert_eq!(out.code, 0, "{}", out.text);
    assert!(out.text.contains("deleted script count"), "{}", out.text);
    assert_eq!(scripts(&url, "shop"), ["hello", "order"]);
    assert_eq!(
        json(&url, &["triggers", "list", "shop"])["triggers"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let config = json(&url, &["config", "list", "shop"]);
    assert!(config["config"].get("limit").is_none(), "{config}");

    // An unknown key: file, line and key named, nothing applied.
    write(
        &dir,
        "picloud.toml",
        &trimmed.replace(
            "[[http]]\nroute = \"GET /hello\"\n",
            "[[http]]\nroute = \"GET /hello\"\ncolour = \"red\"\n",
        ),
    );
    let out = cli(&url, &["push", d, "--yes"]);
    assert_eq!(out.code, 1, "{}", out.text);
    assert!(
        out.text
            .contains("picloud.toml:6:1: key 'colour': unknown field `colour`"),
        "{}",
        out.text
    );
    write(&dir, "picloud.toml", &trimmed);

    // A route another script holds on the server: refused in the plan.
    write(&dir, "other.rhai", "1");
    write(
        &dir,
        "picloud.toml",
        &trimmed.replace(
            "route = \"GET /hello\"\nscript = \"hello\"",
            "route = \"GET /hello\"\nscript = \"other\"",
        ),
    );
    let out = cli(&url, &["push", d, "--yes"]);
    assert_eq!(out.code, 1, "{}", out.text);
    assert!(
        out.text
            .contains("route GET /hello is bound by script 'hello' on the server"),
        "{}",
        out.text
    );
    assert!(
        !scripts(&url, "shop").contains(&"other".to_owned()),
        "nothing applied"
    );
    std::fs::remove_file(dir.join("other.rhai")).unwrap();
    write(&dir, "picloud.toml", &trimmed);

    // Pull, then push the pulled folder: no changes.
    let pulled = work.path().join("pulled");
    let out = cli(&url, &["pull", "shop", pulled.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.text);
    assert!(pulled.join("hello.rhai").is_file() && pulled.join("order.rhai").is_file());
    let ignore = std::fs::read_to_string(pulled.join(".gitignore")).unwrap();
    assert!(ignore.lines().any(|l| l == ".env"), "{ignore}");
    let out = cli(&url, &["push", pulled.to_str().unwrap(), "--dry-run"]);
    assert_eq!(out.code, 0, "{}", out.text);
    assert!(out.text.trim_end().ends_with("no changes"), "{}", out.text);
    let out = cli(&url, &["pull", "shop", pulled.to_str().unwrap()]);
    assert_eq!(
        out.code, 1,
        "a second pull does not overwrite: {}",
        out.text
    );
    drop(running);
}

#[test]
fn push_plans_applies_prunes_and_pull_round_trips_on_sqlite() {
    push_scenario(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_plans_applies_prunes_and_pull_round_trips_on_postgres() {
    let db = storage::testing::TestUrl::postgres().await;
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || push_scenario(Some(&url)))
        .await
        .unwrap();
}

/// `picloud dev DIR` as a child, its output read line by line.
struct Dev {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    #[allow(clippy::zombie_processes)] // `Dev::drop` kills and waits
    fn start(url: &str, dir: &Path) -> Dev {
        let mut child = Command::new(BIN)
            .args(["dev", dir.to_str().unwrap()])
            .env("PICLOUD_URL", url)
            .env("PICLOUD_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start picloud dev");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Dev {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Wait for a line containing `needle` (printed after the last one waited for).
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "picloud dev did not print {needle:?} within 60 s; it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

#[test]
fn dev_pushes_good_saves_keeps_the_running_version_on_bad_ones_and_tails() {
    let data = tempfile::tempdir().unwrap();
    let running = server(data.path(), None);
    let url = running.url.clone();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("shop");
    write(
        &dir,
        "picloud.toml",
        "app = \"shop\"\n[[http]]\nroute = \"GET /hello\"\nscript = \"hello\"\n[[topic]]\ntopic = \"t\"\nscript = \"extra\"\n[config]\ngreeting = \"Hello\"\n",
    );
    write(&dir, "hello.rhai", HELLO);
    write(&dir, "extra.rhai", "log::info(\"extra\");\n");
    let mut dev = Dev::start(&url, &dir);
    dev.expect("watching");
    dev.expect("deployed hello version 1");
    dev.expect("added trigger http GET /hello -> hello");
    assert!(invoke(&url, "shop", "/hello", &[]).contains("Hello, world!"));
    // The call shows up in dev's tail, with its script and version.
    dev.expect("hello@v1");

    // A good save: one new version, served at once.
    write(&dir, "hello.rhai", &HELLO.replace("world", "dev"));
    dev.expect("deployed hello version 2");
    assert!(invoke(&url, "shop", "/hello", &[]).contains("Hello, dev!"));
    dev.expect("hello@v2");

    // An editor's swap file is not a change; a bad save keeps the running version.
    write(&dir, ".hello.rhai.swp", "garbage");
    write(&dir, "hello.rhai", "let x = ;\n");
    let error = dev.expect("error: hello.rhai:1:");
    assert!(error.contains("hello.rhai:1:"), "{error}");
    dev.expect("nothing was pushed");
    assert_eq!(versions(&url, "shop", "hello"), 2);
    assert!(invoke(&url, "shop", "/hello", &[]).contains("Hello, dev!"));

    // Fixed again, and a deleted file (without prune): reported, kept on the server.
    write(&dir, "hello.rhai", HELLO);
    dev.expect("deployed hello version 3");
    write(
        &dir,
        "picloud.toml",
        "app = \"shop\"\n[[http]]\nroute = \"GET /hello\"\nscript = \"hello\"\n[config]\ngreeting = \"Hello\"\n",
    );
    std::fs::remove_file(dir.join("extra.rhai")).unwrap();
    dev.expect("note: script extra is on the server but not in the folder");
    assert!(scripts(&url, "shop").contains(&"extra".to_owned()));
    assert_eq!(versions(&url, "shop", "hello"), 3);

    // The server goes away: a save is retried with a backoff and pushed once the server is
    // back (on the same address, the same data).
    let addr = url.trim_start_matches("http://").to_owned();
    drop(running);
    write(&dir, "hello.rhai", &HELLO.replace("world", "again"));
    dev.expect("trying again in");
    let running = start(
        data.path(),
        &[("PICLOUD_ADMIN_TOKEN", TOKEN), ("PICLOUD_BIND", &addr)],
    );
    assert_eq!(running.url, url);
    dev.expect("deployed hello version 4");
    dev.expect("the server answers again");
    assert!(invoke(&url, "shop", "/hello", &[]).contains("Hello, again!"));
    // The tail (the server's live invocation stream) came back with the server.
    dev.expect("hello@v4");
    drop(dev);
    drop(running);
}

/// The repository's `examples/guestbook`.
fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/guestbook")
}

fn example_scenario(database_url: Option<&str>) {
    let data = tempfile::tempdir().unwrap();
    let running = server(data.path(), database_url);
    let url = running.url.clone();
    let dir = example_dir();
    let d = dir.to_str().unwrap();
    let out = cli(&url, &["push", d, "--yes"]);
    assert_eq!(out.code, 0, "{}", out.text);
    let out = cli(&url, &["push", d, "--dry-run"]);
    assert_eq!(
        out.code, 0,
        "the example is in step after one push: {}",
        out.text
    );

    let signed = json(
        &url,
        &[
            "invoke",
            "guestbook",
            "/sign",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"name": "Ada", "message": "Hello from the example"}"#,
        ],
    );
    assert_eq!(signed["status"], 201, "{signed}");
    let refused = cli(&url, &["invoke", "guestbook", "/sign", "-d", "{}"]);
    assert!(refused.text.contains("400"), "{}", refused.text);
    // The topic handler counts the signature once its event ran.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let entries = json(&url, &["invoke", "guestbook", "/entries"]);
        if entries["body"]["signatures"] == 1 {
            assert_eq!(entries["body"]["title"], "Our guestbook", "{entries}");
            assert_eq!(
                entries["body"]["entries"][0]["message"], "Hello from the example",
                "{entries}"
            );
            assert_eq!(entries["body"]["entries"][0]["name"], "Ada", "{entries}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the signature was not counted: {entries}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let triggers = json(&url, &["triggers", "list", "guestbook"]);
    let cron = triggers["triggers"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["kind"] == "cron"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(cron["timezone"], "Europe/Berlin", "{triggers}");
    drop(running);
}

#[test]
fn the_example_app_is_pushed_and_answers_on_sqlite() {
    example_scenario(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_app_is_pushed_and_answers_on_postgres() {
    let db = storage::testing::TestUrl::postgres().await;
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || example_scenario(Some(&url)))
        .await
        .unwrap();
}
