//! Backup and restore (docs/backup.md) through the real CLI: a server with data in every
//! table backed up on one backend and restored on the other answers the same; a damaged,
//! truncated or newer archive, another secrets key or a server that has apps restores
//! nothing.
use std::path::{Path, PathBuf};
use std::time::Duration;

use manager_core::backup::{self as archive, ArchiveWriter};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestApp, cli, spawn_app, spawn_app_with};
use picloud::Config;
use storage::testing::S3Server;
use testkit::{Backend, eventually, on_both_backends};

on_both_backends!(
    a_backup_while_writes_go_on_is_one_snapshot,
    a_damaged_truncated_or_newer_archive_restores_nothing,
    a_server_with_apps_or_another_key_refuses_the_restore,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_backup_restores_on_postgres_and_answers_the_same() {
    moves(Backend::Sqlite, Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_backup_restores_on_sqlite_and_answers_the_same() {
    moves(Backend::Postgres, Backend::Sqlite).await;
}

const SHOW: &str = r#"
let bytes = blob::get("bytes.bin");
#{
    version: "VERSION",
    currency: config::get("currency"),
    secret: secrets::get("stripe"),
    plain: kv::get("plain"),
    nested: kv::get("nested"),
    dead: kv::get("dead"),
    text: blob::get("dir/hello.txt").data,
    size: bytes.size,
    content_type: bytes.content_type,
}
"#;

const SEED: &str = r#"
kv::set("plain", "text");
kv::set("nested", #{ a: [1, 2.5, true, ()], "ünï": "cødé 🎉", big: 9007199254740993 });
kv::set("expiring", 42, #{ ttl: 3600 });
let b = blob();
for i in 0..256 { b.push(i); }
blob::put("bytes.bin", b, "application/octet-stream");
blob::put("dir/hello.txt", "hello, world");
queue::send("later", #{ n: 7 });
queue::send("failing", #{ n: 1 });
#{ seeded: true }
"#;

/// A server with a row in every table a backup keeps: two apps, a script with three
/// versions rolled back to the second, every trigger kind, config, a secret, limits, a
/// read token, realtime topics, CORS origins and a signing key, KV, blobs, a dead letter
/// and a queue message waiting for a consumer.
async fn fill(app: &TestApp) -> String {
    assert_eq!(app.create_app("shop").await.status(), 201);
    for v in ["v1", "v2", "v3"] {
        let res = app
            .deploy("shop", "show", &SHOW.replace("VERSION", v))
            .await;
        assert!(res.status().is_success(), "deploy {v}");
    }
    let res = app
        .admin(Method::POST, "/apps/shop/scripts/show/rollback")
        .json(&json!({"version": 2}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "rollback");
    assert_eq!(
        app.add_route("shop", "GET", "/show", "show").await.status(),
        201
    );
    app.endpoint("shop", "seed", "POST /seed", SEED).await;
    app.handler(
        "shop",
        "failer",
        json!({"kind": "queue", "queue": "failing", "max_attempts": 1}),
        r#"throw "boom""#,
    )
    .await;
    app.handler(
        "shop",
        "dl",
        json!({"kind": "dead_letter"}),
        r#"kv::set("dead", event.kind); ()"#,
    )
    .await;
    app.handler(
        "shop",
        "news",
        json!({"kind": "topic", "topic": "news"}),
        "()",
    )
    .await;
    app.handler(
        "shop",
        "tick",
        json!({"kind": "cron", "schedule": "0 0 1 1 *", "timezone": "Europe/Berlin"}),
        "()",
    )
    .await;
    app.deploy("shop", "later", r#"kv::set("later", event.payload.n); ()"#)
        .await;
    app.token_endpoint("shop", r#"#{topics: ["news"], sub: "user-42", ttl: 3600}"#)
        .await;
    assert_eq!(app.expose("shop", "news").await.status(), 201);
    for (path, body) in [
        ("/apps/shop/config/currency", json!({"value": "EUR"})),
        ("/apps/shop/secrets/stripe", json!({"value": "sk_live_42"})),
        ("/apps/shop/limits", json!({"timeout_ms": 1500})),
        (
            "/apps/shop/scripts/show/limits",
            json!({"max_operations": 100000}),
        ),
        (
            "/apps/shop/realtime/cors",
            json!({"origins": ["https://shop.example"]}),
        ),
    ] {
        let res = app
            .admin(Method::PUT, path)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
    }
    app.endpoint("blog", "post", "GET /post", r#"#{ title: "first" }"#)
        .await;
    let seeded = app.call(Method::POST, "/shop/seed").send().await.unwrap();
    assert_eq!(seeded.status(), 200);
    // The failing message becomes a dead letter, whose trigger writes `dead`.
    eventually(
        "the dead letter's trigger ran",
        Duration::from_secs(20),
        async || app.kv("shop", "dead").await,
    )
    .await;
    let res = app
        .admin(Method::POST, "/tokens")
        .json(&json!({"name": "reader", "role": "read"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .expect("token secret")
        .to_owned()
}

/// The admin answers that must be the same on both servers.
const SAME: &[&str] = &[
    "/apps",
    "/apps/shop/scripts",
    "/apps/shop/scripts/show/versions",
    "/apps/shop/triggers",
    "/apps/blog/triggers",
    "/apps/shop/config",
    "/apps/shop/secrets",
    "/apps/shop/kv",
    "/apps/shop/kv/nested",
    "/apps/shop/blobs",
    "/apps/shop/dead-letters",
    "/apps/shop/limits",
    "/apps/shop/scripts/show/limits",
    "/apps/shop/realtime/topics",
    "/apps/shop/realtime/cors",
];

async fn admin_json(app: &TestApp, path: &str) -> Value {
    let res = app.admin(Method::GET, path).send().await.unwrap();
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.unwrap()
}

async fn bytes(app: &TestApp, path: &str) -> Vec<u8> {
    let res = app.admin(Method::GET, path).send().await.unwrap();
    assert_eq!(res.status(), 200, "{path}");
    res.bytes().await.unwrap().to_vec()
}

/// The same secrets key for the target: secrets restore sealed, as they were.
fn key_of(app: &TestApp) -> PathBuf {
    app.dir.path().join("data").join("secret.key")
}

/// PostgreSQL servers keep their blobs in S3 (when there is an S3 server to test with),
/// SQLite servers in their data directory: each move reads from one store and writes to
/// the other.
fn blob_store(db: Backend, s3: Option<&S3Server>, config: &mut Config) {
    if let (Backend::Postgres, Some(s3)) = (db, s3) {
        let blobs = &mut config.blobs;
        blobs.s3_endpoint = Some(s3.endpoint.clone());
        blobs.s3_bucket = Some(S3Server::BUCKET.into());
        blobs.s3_access_key_id = Some("test".into());
        blobs.s3_secret_access_key = Some("test".into());
        blobs.s3_allow_http = true;
    }
}

async fn moves(from: Backend, to: Backend) {
    let s3 = S3Server::start().await;
    let source = spawn_app_with(from, |c| blob_store(from, s3.as_ref(), c)).await;
    let read_token = fill(&source).await;
    let realtime_token = source.token("shop").await;
    let file = source.dir.path().join("server.tar");
    let (ok, out) = cli(
        &source,
        &["backup", file.to_str().unwrap(), "--with-invocations"],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("backup written to"), "{out}");
    assert!(out.contains("received"), "progress: {out}");

    let key = key_of(&source);
    let target = spawn_app_with(to, |c| {
        c.secrets_key_file = Some(key);
        blob_store(to, s3.as_ref(), c);
    })
    .await;
    let (ok, out) = cli(&target, &["restore", file.to_str().unwrap()]).await;
    assert!(ok, "{out}");
    assert!(out.contains("restored 2 app(s): blog, shop"), "{out}");
    assert!(out.contains("sent"), "progress: {out}");

    // The same requests give the same answers.
    let shown = target.get("/shop/show").await;
    assert_eq!(shown.status(), 200);
    let shown: Value = shown.json().await.unwrap();
    assert_eq!(
        shown,
        source
            .get("/shop/show")
            .await
            .json::<Value>()
            .await
            .unwrap()
    );
    assert_eq!(shown["version"], "v2");
    assert_eq!(
        shown["secret"], "sk_live_42",
        "secrets are readable by scripts"
    );
    assert_eq!(shown["nested"]["big"], json!(9_007_199_254_740_993_i64));
    assert_eq!(shown["size"], 256);
    assert_eq!(
        target
            .get("/blog/post")
            .await
            .json::<Value>()
            .await
            .unwrap()["title"],
        "first"
    );
    for path in SAME {
        assert_eq!(
            admin_json(&target, path).await,
            admin_json(&source, path).await,
            "{path}"
        );
    }
    // KV and blobs byte for byte.
    for key in ["plain", "nested", "expiring", "dead"] {
        let path = format!("/apps/shop/kv/{key}");
        assert_eq!(
            bytes(&target, &path).await,
            bytes(&source, &path).await,
            "{path}"
        );
    }
    for name in ["bytes.bin", "dir%2Fhello.txt"] {
        let path = format!("/apps/shop/blobs/{name}");
        let copied = bytes(&target, &path).await;
        assert_eq!(copied, bytes(&source, &path).await, "{path}");
        if name == "bytes.bin" {
            assert_eq!(copied, (0..=255).collect::<Vec<u8>>());
        }
    }
    let local = |app: &TestApp| files_under(&app.dir.path().join("data").join("blobs"));
    if s3.is_some() {
        // The PostgreSQL side's objects are in S3, none in its data directory.
        let (sqlite, postgres) = if to == Backend::Postgres {
            (&source, &target)
        } else {
            (&target, &source)
        };
        assert_eq!(local(postgres), 0);
        assert_eq!(local(sqlite), 2);
    }
    // The version history is intact: rolling forward serves the third version.
    let res = target
        .admin(Method::POST, "/apps/shop/scripts/show/rollback")
        .json(&json!({"version": 3}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert_eq!(
        target
            .get("/shop/show")
            .await
            .json::<Value>()
            .await
            .unwrap()["version"],
        "v3"
    );
    // Invocation records came along (`--with-invocations`).
    let listed = target.invocations("shop", "limit=100").await;
    assert!(
        !listed["invocations"].as_array().unwrap().is_empty(),
        "{listed}"
    );
    // The read token and the realtime signing key work on the new server.
    let res = target
        .client
        .get(format!("{}/api/v1/apps", target.url))
        .bearer_auth(&read_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let stream = target
        .realtime("shop", "news")
        .bearer_auth(&realtime_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        stream.status(),
        200,
        "a token minted before the move still opens a stream"
    );
    drop(stream);
    // The queue message that waited for a consumer is delivered once there is one.
    let res = target
        .add_trigger(
            "shop",
            json!({"kind": "queue", "queue": "later", "script": "later"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let later = eventually(
        "the waiting message ran",
        Duration::from_secs(20),
        async || target.kv("shop", "later").await,
    )
    .await;
    assert_eq!(later, json!(7));
}

/// A fresh source with one app, a secret and a blob, and its archive's bytes.
async fn small_archive(db: Backend) -> (TestApp, Vec<u8>) {
    let source = spawn_app(db).await;
    source
        .endpoint(
            "shop",
            "seed",
            "POST /seed",
            r#"blob::put("a.txt", "AAAAAAAAAAAAAAAAAAAA"); kv::set("k", 1); #{}"#,
        )
        .await;
    let res = source
        .admin(Method::PUT, "/apps/shop/secrets/stripe")
        .json(&json!({"value": "sk"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert_eq!(
        source
            .call(Method::POST, "/shop/seed")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let res = source.admin(Method::GET, "/backup").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-tar");
    let bytes = res.bytes().await.unwrap().to_vec();
    (source, bytes)
}

/// Restore `bytes` into `target`: the status and the error message.
async fn restore(target: &TestApp, bytes: Vec<u8>, query: &str) -> (StatusCode, String) {
    let res = target
        .admin(Method::POST, &format!("/restore{query}"))
        .header("content-type", "application/x-tar")
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, message)
}

fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap().path())
        .map(|p| if p.is_dir() { files_under(&p) } else { 1 })
        .sum()
}

/// Nothing was restored: no app, no blob object left behind.
async fn nothing_restored(target: &TestApp) {
    assert_eq!(admin_json(target, "/apps").await["apps"], json!([]));
    assert_eq!(
        files_under(&target.dir.path().join("data").join("blobs")),
        0
    );
}

/// Rewrite an archive with `change` applied to its manifest and tables (sums recomputed).
fn rewrite(
    bytes: &[u8],
    change: impl FnOnce(&mut archive::Manifest, &mut Vec<shared::store::TableRows>),
) -> Vec<u8> {
    let mut file = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut file, bytes).unwrap();
    let archive::Verified {
        mut manifest,
        mut tables,
        ..
    } = archive::verify(&mut file, i64::MAX).expect("a good archive");
    let mut objects = Vec::new();
    archive::for_each_object(&mut file, |k, d| {
        objects.push((k, d));
        Ok(())
    })
    .unwrap();
    change(&mut manifest, &mut tables);
    let mut writer = ArchiveWriter::new(tempfile::tempfile().unwrap());
    for (key, data) in &objects {
        writer.add(&archive::object_path(key), data).unwrap();
    }
    for t in &tables {
        writer.add_table(t).unwrap();
    }
    let (mut out, _) = writer.finish(manifest).unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut out, &mut bytes).unwrap();
    bytes
}

async fn a_damaged_truncated_or_newer_archive_restores_nothing(db: Backend) {
    let (source, good) = small_archive(db).await;
    let key = key_of(&source);
    let target = spawn_app_with(db, |c| c.secrets_key_file = Some(key)).await;

    let at = good
        .windows(20)
        .position(|w| w == b"AAAAAAAAAAAAAAAAAAAA")
        .expect("the blob's bytes");
    let mut flipped = good.clone();
    flipped[at + 3] = b'B';
    let (status, message) = restore(&target, flipped, "").await;
    assert_eq!(status, 400);
    assert!(
        message.contains("corrupted") && message.contains("checksum"),
        "{message}"
    );
    nothing_restored(&target).await;

    for cut in [good.len() / 2, good.len() - 1100, 100] {
        let (status, message) = restore(&target, good[..cut].to_vec(), "").await;
        assert_eq!(status, 400, "cut at {cut}");
        assert!(message.contains("truncated"), "cut at {cut}: {message}");
        nothing_restored(&target).await;
    }

    let newer = rewrite(&good, |m, _| m.format_version = archive::FORMAT_VERSION + 1);
    let (status, message) = restore(&target, newer, "").await;
    assert_eq!(status, 400);
    assert!(message.contains("newer PiCloud"), "{message}");
    let newer = rewrite(&good, |m, _| m.schema_version += 1);
    let (status, message) = restore(&target, newer, "").await;
    assert!(
        message.contains("newer PiCloud") && message.contains("schema migration"),
        "{message}"
    );
    assert_eq!(status, 400);
    nothing_restored(&target).await;

    // Rows this server cannot take are found after the blob objects were stored: those
    // are removed again.
    let odd = rewrite(&good, |_, tables| {
        let kv = tables.iter_mut().find(|t| t.table == "kv").expect("kv");
        kv.rows[0].insert("colour".into(), json!("red"));
    });
    let (status, message) = restore(&target, odd, "").await;
    assert_eq!(status, 400);
    assert!(message.contains("unknown column 'colour'"), "{message}");
    nothing_restored(&target).await;

    // The good archive still restores.
    let (status, message) = restore(&target, good, "").await;
    assert_eq!(status, 200, "{message}");
    assert_eq!(target.kv("shop", "k").await, Some(json!(1)));
}

async fn a_server_with_apps_or_another_key_refuses_the_restore(db: Backend) {
    let (source, good) = small_archive(db).await;
    // Another key: the archive's secrets could not be read here.
    let other = spawn_app(db).await;
    let (status, message) = restore(&other, good.clone(), "").await;
    assert_eq!(status, 409);
    assert!(message.contains("sealed with another key"), "{message}");
    nothing_restored(&other).await;

    let key = key_of(&source);
    let target = spawn_app_with(db, |c| c.secrets_key_file = Some(key)).await;
    target.endpoint("shop", "old", "GET /old", r#""old""#).await;
    target.endpoint("mine", "x", "GET /x", r#""x""#).await;
    let path = target.dir.path().join("in.tar");
    std::fs::write(&path, &good).unwrap();
    let (ok, out) = cli(&target, &["restore", path.to_str().unwrap()]).await;
    assert!(!ok);
    assert!(out.contains("already has 2 app(s): mine, shop"), "{out}");
    assert!(out.contains("would replace shop"), "{out}");
    assert!(out.contains("mine would stay"), "{out}");
    assert!(out.contains("--force"), "{out}");
    assert_eq!(
        target.get("/shop/old").await.status(),
        200,
        "nothing was replaced"
    );

    let (ok, out) = cli(&target, &["restore", path.to_str().unwrap(), "--force"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("replaced: shop"), "{out}");
    assert_eq!(
        target.get("/shop/old").await.status(),
        404,
        "the old shop is gone"
    );
    assert_eq!(target.get("/mine/x").await.status(), 200, "other apps stay");
    let blob = bytes(&target, "/apps/shop/blobs/a.txt").await;
    assert_eq!(blob, b"AAAAAAAAAAAAAAAAAAAA");
    // A second forced restore replaces the first one's objects, which are removed.
    let (ok, out) = cli(&target, &["restore", path.to_str().unwrap(), "--force"]).await;
    assert!(ok, "{out}");
    assert_eq!(
        files_under(&target.dir.path().join("data").join("blobs")),
        1
    );
    assert_eq!(bytes(&target, "/apps/shop/blobs/a.txt").await, blob);
}

/// The archive's tables, from its bytes.
fn tables_of(bytes: &[u8]) -> Vec<shared::store::TableRows> {
    let mut file = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut file, bytes).unwrap();
    archive::verify(&mut file, i64::MAX)
        .expect("a good archive")
        .tables
}

fn row<'a>(
    tables: &'a [shared::store::TableRows],
    table: &str,
    col: &str,
    value: &str,
) -> &'a shared::store::BackupRow {
    tables
        .iter()
        .find(|t| t.table == table)
        .and_then(|t| t.rows.iter().find(|r| r[col] == value))
        .unwrap_or_else(|| panic!("{table} has no row {col} = {value}"))
}

async fn a_backup_while_writes_go_on_is_one_snapshot(db: Backend) {
    let app = spawn_app(db).await;
    // Each run writes, in one commit, a KV entry (n), a blob (n bytes) and one more queue
    // message (n in all: nothing consumes them).
    app.endpoint(
        "shop",
        "bump",
        "POST /bump",
        r#"
        let n = kv::get("n");
        if n == () { n = 0; }
        n += 1;
        kv::set("n", n);
        let body = "";
        body.pad(n, 'x');
        blob::put("n", body);
        queue::send("later", n);
        n
        "#,
    )
    .await;
    let bump = async || {
        let res = app.call(Method::POST, "/shop/bump").send().await.unwrap();
        assert_eq!(res.status(), 200, "the server keeps serving");
    };
    bump().await;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let writer = async {
        let mut runs = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            bump().await;
            runs += 1;
        }
        runs
    };
    let backups = async {
        let mut archives = Vec::new();
        for _ in 0..4 {
            let res = app.admin(Method::GET, "/backup").send().await.unwrap();
            assert_eq!(res.status(), 200);
            archives.push(res.bytes().await.unwrap().to_vec());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        archives
    };
    let (runs, archives) = tokio::join!(writer, backups);
    assert!(runs > 0);
    for bytes in archives {
        let tables = tables_of(&bytes);
        let n: u64 = row(&tables, "kv", "key", "n")["value"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .expect("a number");
        let messages = tables
            .iter()
            .find(|t| t.table == "outbox")
            .map_or(0, |t| t.rows.len() as u64);
        assert_eq!(
            messages, n,
            "the KV entry and the queue messages of the same commits"
        );
        let blob = tables
            .iter()
            .find(|t| t.table == "blobs")
            .and_then(|t| t.rows.iter().find(|r| r["name"] == "n"));
        // A blob replaced after the snapshot is left out; one that is there is the same run's.
        if let Some(blob) = blob {
            assert_eq!(blob["size"], n, "the KV entry and the blob of one commit");
        }
    }
}
