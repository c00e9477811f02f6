//! Script capabilities end to end: KV, blobs, modules, config and secrets, outbound HTTP
//! under the SSRF policy, and email into the development mailbox.
use axum::routing::get;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{encode, spawn_app, spawn_app_with};
use testkit::{Backend, eventually, on_both_backends};

/// How long a loaded machine may take for what a test waits on; never a timing.
const BOUND: std::time::Duration = std::time::Duration::from_secs(20);

on_both_backends!(
    kv_writes_are_read_back_by_scripts_and_the_admin_api,
    apps_cannot_reach_each_others_keys_or_blobs_even_with_crafted_names,
    blobs_round_trip_bytes_and_content_type_and_empty_blobs_are_valid,
    a_script_imports_another_script_of_its_app,
    config_and_secrets_reach_scripts_and_secret_values_never_leave_the_api,
    outbound_http_reaches_allowed_servers_and_the_default_policy_refuses_loopback,
    email_without_smtp_lands_in_the_development_mailbox,
    deleting_an_app_removes_its_blob_files,
    writes_answered_inline_commit_once_each_to_its_own_app,
    a_discarded_inline_try_leaves_nothing_behind_and_its_rerun_commits_once,
);

/// The value of a metric line `name value` in the `/metrics` text (`None`: not there).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

const KEPT: &str = r#"picloud_script_inline_runs_total{outcome="kept"}"#;
const DISCARDED: &str = r#"picloud_script_inline_runs_total{outcome="discarded"}"#;

/// Scripts whose only host calls buffer effects are answered by their inline try on the
/// runtime worker: each request's writes and queued message are committed once, to the
/// app it was routed to, before it is answered.
async fn writes_answered_inline_commit_once_each_to_its_own_app(db: Backend) {
    let app = spawn_app(db).await;
    let source = |who: &str| {
        format!(
            r#"let i = request.params.i; kv::set("k" + i, "{who}"); kv::set("last", i);
               kv::set("gone", 1); kv::delete("gone"); queue::send("jobs", i); "ok""#
        )
    };
    app.endpoint("shop", "put", "GET /put/:i", &source("shop"))
        .await;
    app.endpoint("other", "put", "GET /put/:i", &source("other"))
        .await;
    let owner = |i: usize| if i % 4 == 3 { "other" } else { "shop" };
    futures::future::join_all((0..24).map(|i| {
        let app = &app;
        async move {
            let res = app.get(&format!("/{}/put/{i}", owner(i))).await;
            assert_eq!(res.status(), 200);
            assert_eq!(res.text().await.unwrap(), "ok");
            // Committed before the answer: another connection reads it at once.
            assert_eq!(
                app.kv(owner(i), &format!("k{i}")).await,
                Some(json!(owner(i)))
            );
        }
    }))
    .await;
    for i in 0..24 {
        let stranger = if owner(i) == "shop" { "other" } else { "shop" };
        assert_eq!(app.kv(stranger, &format!("k{i}")).await, None, "k{i}");
    }
    for (name, requests) in [("shop", 18), ("other", 6)] {
        let queued = app
            .store
            .outbox
            .pending(&shared::AppName::parse(name).unwrap())
            .await
            .unwrap();
        assert_eq!(queued, requests, "one queued message per request of {name}");
        assert_eq!(app.kv(name, "gone").await, None);
        let last = app.kv(name, "last").await.expect("last is written");
        let last: usize = last.as_str().unwrap().parse().unwrap();
        assert_eq!(owner(last), name);
    }
    // Each app's first request was tried inline (kept, or discarded if the loaded machine
    // ran it past the try's millisecond: then it ran again on a script thread); each
    // request ran once.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let tried = metric(&metrics, KEPT).unwrap_or(0.0) + metric(&metrics, DISCARDED).unwrap_or(0.0);
    assert!(tried >= 2.0, "{metrics}");
    let ok = r#"picloud_script_runs_total{outcome="ok"}"#;
    assert_eq!(metric(&metrics, ok), Some(24.0), "{metrics}");
}

/// A try that buffered writes and then made a call it may not make (`kv :: get`, written
/// so to get past the source check) is discarded with what it buffered; the invocation
/// runs again on a script thread, whose effects are committed once.
async fn a_discarded_inline_try_leaves_nothing_behind_and_its_rerun_commits_once(db: Backend) {
    let app = spawn_app(db).await;
    app.endpoint(
        "shop",
        "echo",
        "GET /echo/:i",
        r#"let i = request.params.i; kv::set("d" + i, i); queue::send("jobs", i);
           kv :: get("d" + i)"#,
    )
    .await;
    for i in 0..5 {
        let res = app.get(&format!("/shop/echo/{i}")).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.unwrap(), i.to_string());
        assert_eq!(
            app.kv("shop", &format!("d{i}")).await,
            Some(json!(i.to_string()))
        );
    }
    let queued = app
        .store
        .outbox
        .pending(&shared::AppName::parse("shop").unwrap())
        .await
        .unwrap();
    assert_eq!(
        queued, 5,
        "one queued message per request, none from the discarded try"
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(metric(&metrics, DISCARDED), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, KEPT).unwrap_or(0.0), 0.0, "{metrics}");
}

/// Regular files under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                files_under(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

async fn deleting_an_app_removes_its_blob_files(db: Backend) {
    let app = spawn_app(db).await;
    app.endpoint(
        "files",
        "put",
        "POST /put",
        r#"blob::put("a.txt", "aaa"); blob::put("b.txt", "bbb"); "ok""#,
    )
    .await;
    app.endpoint(
        "keep",
        "put",
        "POST /put",
        r#"blob::put("c.txt", "ccc"); "ok""#,
    )
    .await;
    app.call(Method::POST, "/files/put").send().await.unwrap();
    app.call(Method::POST, "/keep/put").send().await.unwrap();
    let blobs = app.dir.path().join("data").join("blobs");
    assert_eq!(files_under(&blobs.join("files")).len(), 2);

    assert_eq!(
        app.admin(Method::DELETE, "/apps/files")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert!(
        files_under(&blobs.join("files")).is_empty(),
        "the deleted app's blob bytes are gone"
    );
    assert_eq!(
        files_under(&blobs.join("keep")).len(),
        1,
        "other apps keep theirs"
    );
}

async fn kv_writes_are_read_back_by_scripts_and_the_admin_api(db: Backend) {
    let app = spawn_app(db).await;
    app.endpoint(
        "shop",
        "put",
        "POST /kv/:key",
        r#"kv::set(request.params.key, request.json); kv::get(request.params.key)"#,
    )
    .await;
    app.endpoint(
        "shop",
        "get",
        "GET /kv/:key",
        r#"kv::get(request.params.key) ?? "missing""#,
    )
    .await;
    app.endpoint("shop", "count", "POST /count", r#"kv::incr("hits", 1)"#)
        .await;
    app.endpoint("shop", "list", "GET /list", r#"kv::list("user:")"#)
        .await;

    let res = app
        .call(Method::POST, "/shop/kv/user:1")
        .json(&json!({"name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"name": "Ada"}),
        "read-your-own-writes"
    );
    app.call(Method::POST, "/shop/kv/user:2")
        .json(&json!(2))
        .send()
        .await
        .unwrap();
    assert_eq!(
        app.get("/shop/kv/user:1")
            .await
            .json::<Value>()
            .await
            .unwrap()["name"],
        "Ada"
    );
    assert_eq!(
        app.get("/shop/kv/nope").await.text().await.unwrap(),
        "missing"
    );
    for expected in 1..=3 {
        let n: i64 = app
            .call(Method::POST, "/shop/count")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(n, expected);
    }
    let listed: Value = app.get("/shop/list").await.json().await.unwrap();
    assert_eq!(listed["keys"], json!(["user:1", "user:2"]));

    assert_eq!(app.kv("shop", "hits").await, Some(json!(3)));
    let res = app
        .admin(Method::GET, "/apps/shop/kv?prefix=user:")
        .send()
        .await
        .unwrap();
    let entries: Value = res.json().await.unwrap();
    assert_eq!(entries["entries"].as_array().unwrap().len(), 2);
    let res = app
        .admin(
            Method::DELETE,
            &format!("/apps/shop/kv/{}", encode("user:1")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(app.kv("shop", "user:1").await, None);
}

async fn apps_cannot_reach_each_others_keys_or_blobs_even_with_crafted_names(db: Backend) {
    let app = spawn_app(db).await;
    let writer = r#"kv::set("secret", "alpha only"); blob::put("secret.txt", "alpha blob"); "ok""#;
    app.endpoint("alpha", "write", "POST /write", writer).await;
    let reader = r#"
        let names = ["secret", "../alpha/secret", "/alpha/secret", "alpha/secret", "%", "_"];
        let found = [];
        for n in names { if kv::get(n) != () { found.push(n); } }
        for n in ["secret.txt", "../alpha/secret.txt", "../../alpha/secret.txt"] {
            if blob::get(n) != () { found.push(n); }
        }
        #{ found: found, keys: kv::list("").keys, blobs: blob::list("").blobs.len() }
    "#;
    app.endpoint("beta", "read", "GET /read", reader).await;
    app.endpoint(
        "beta",
        "bad",
        "GET /bad/:which",
        r#"
        switch request.params.which {
            "nul" => kv::set("a\x00b", 1),
            "long" => { let k = "k"; k.pad(600, 'k'); kv::set(k, 1) }
            "empty" => blob::put("", "x"),
            "control" => blob::put("line\nbreak", "x"),
        }
    "#,
    )
    .await;

    assert_eq!(
        app.call(Method::POST, "/alpha/write")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let seen: Value = app.get("/beta/read").await.json().await.unwrap();
    assert_eq!(seen, json!({"found": [], "keys": [], "blobs": 0}));
    for case in ["nul", "long", "empty", "control"] {
        let res = app.get(&format!("/beta/bad/{case}")).await;
        assert_eq!(res.status(), 500, "{case}");
    }
    // Through the admin API too: beta's view is empty, alpha's data is intact.
    let res = app
        .admin(Method::GET, "/apps/beta/kv/secret")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = app
        .admin(
            Method::GET,
            &format!("/apps/beta/blobs/{}", encode("../alpha/secret.txt")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(app.kv("alpha", "secret").await, Some(json!("alpha only")));
}

async fn blobs_round_trip_bytes_and_content_type_and_empty_blobs_are_valid(db: Backend) {
    let app = spawn_app(db).await;
    app.endpoint(
        "files",
        "upload",
        "PUT /files/*name",
        r#"blob::put(request.params.name, request.body, request.headers["content-type"]); "stored""#,
    )
    .await;
    app.endpoint(
        "files",
        "download",
        "GET /files/*name",
        r#"
        let b = blob::get(request.params.name);
        if b == () { return response(404, "none"); }
        response(200, b.data, #{ "content-type": b.content_type, "x-size": b.size })
    "#,
    )
    .await;
    app.endpoint(
        "files",
        "remove",
        "DELETE /files/*name",
        r#"blob::delete(request.params.name); "gone""#,
    )
    .await;

    let res = app
        .call(Method::PUT, "/files/files/docs/readme.md")
        .header("content-type", "text/markdown")
        .body("# hi")
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "stored");
    let res = app.get("/files/files/docs/readme.md").await;
    assert_eq!(res.headers()["content-type"], "text/markdown");
    assert_eq!(res.text().await.unwrap(), "# hi");

    let res = app
        .call(Method::PUT, "/files/files/empty")
        .header("content-type", "text/plain")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app.get("/files/files/empty").await;
    assert_eq!(res.headers()["x-size"], "0");

    let res = app
        .admin(
            Method::GET,
            &format!("/apps/files/blobs/{}", "docs/readme.md"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/markdown");
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"# hi");
    let listed: Value = app
        .admin(Method::GET, "/apps/files/blobs?prefix=docs/")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["blobs"][0]["name"], "docs/readme.md");
    assert_eq!(listed["blobs"][0]["size"], 4);

    app.call(Method::DELETE, "/files/files/docs/readme.md")
        .send()
        .await
        .unwrap();
    assert_eq!(app.get("/files/files/docs/readme.md").await.status(), 404);
}

async fn a_script_imports_another_script_of_its_app(db: Backend) {
    let app = spawn_app(db).await;
    app.create_app("shop").await;
    assert!(
        app.deploy("shop", "helpers", "fn greet(name) { `Hello, ${name}!` }")
            .await
            .status()
            .is_success()
    );
    app.endpoint(
        "shop",
        "hello",
        "GET /hello",
        r#"import "helpers" as h; h::greet("module")"#,
    )
    .await;
    app.endpoint(
        "shop",
        "missing",
        "GET /missing",
        r#"import "nope" as n; n::x()"#,
    )
    .await;
    app.endpoint(
        "other",
        "steal",
        "GET /steal",
        r#"import "helpers" as h; h::greet("thief")"#,
    )
    .await;

    assert_eq!(
        app.get("/shop/hello").await.text().await.unwrap(),
        "Hello, module!"
    );
    assert_eq!(app.get("/shop/missing").await.status(), 500);
    assert_eq!(
        app.get("/other/steal").await.status(),
        500,
        "modules resolve within the app only"
    );

    // A new version of the module is used from the next request on.
    app.deploy("shop", "helpers", "fn greet(name) { `Hi, ${name}.` }")
        .await;
    assert_eq!(
        app.get("/shop/hello").await.text().await.unwrap(),
        "Hi, module."
    );
}

async fn config_and_secrets_reach_scripts_and_secret_values_never_leave_the_api(db: Backend) {
    let app = spawn_app(db).await;
    app.endpoint("shop", "settings", "GET /settings", r#"#{ currency: config::get("currency"), has_key: secrets::get("stripe") == "sk_live_42", none: config::get("nope") }"#)
        .await;
    let res = app
        .admin(Method::PUT, "/apps/shop/config/currency")
        .json(&json!({"value": "EUR"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let res = app
        .admin(Method::PUT, "/apps/shop/secrets/stripe")
        .json(&json!({"value": "sk_live_42"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let body = res.text().await.unwrap();
    assert!(!body.contains("sk_live_42"));

    let seen: Value = app.get("/shop/settings").await.json().await.unwrap();
    assert_eq!(
        seen,
        json!({"currency": "EUR", "has_key": true, "none": ()})
    );

    for path in [
        "/apps/shop/secrets",
        "/apps/shop/secrets/stripe",
        "/apps/shop/config",
    ] {
        let text = app
            .admin(Method::GET, path)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!text.contains("sk_live_42"), "{path}: {text}");
    }
    let names: Value = app
        .admin(Method::GET, "/apps/shop/secrets")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(names["secrets"], json!(["stripe"]));
}

async fn outbound_http_reaches_allowed_servers_and_the_default_policy_refuses_loopback(
    db: Backend,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}", listener.local_addr().unwrap());
    let router =
        axum::Router::new().route("/data", get(|| async { axum::Json(json!({"answer": 42})) }));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let fetch = format!(
        r#"let r = http::get("{target}/data"); #{{ status: r.status, answer: r.json.answer }}"#
    );
    let allowed = spawn_app(db).await;
    allowed
        .endpoint("shop", "fetch", "GET /fetch", &fetch)
        .await;
    let got: Value = allowed.get("/shop/fetch").await.json().await.unwrap();
    assert_eq!(got, json!({"status": 200, "answer": 42}));

    let strict = spawn_app_with(db, |c| c.outbound.allow_cidrs.clear()).await;
    let mut recorded = strict.recorded();
    strict.endpoint("shop", "fetch", "GET /fetch", &fetch).await;
    let res = strict.get("/shop/fetch").await;
    assert_eq!(res.status(), 500);
    let id = crate::common::invocation_id(&res);
    let record = crate::common::record_of(&mut recorded, &id).await;
    let error = record.error.unwrap_or_default();
    assert!(error.contains("not allowed"), "{error}");
    assert!(
        !error.contains("127.0.0.1"),
        "the address never shows: {error}"
    );
    strict
        .endpoint(
            "shop",
            "file",
            "GET /file",
            r#"http::get("file:///etc/passwd")"#,
        )
        .await;
    assert_eq!(strict.get("/shop/file").await.status(), 500);
}

async fn email_without_smtp_lands_in_the_development_mailbox(db: Backend) {
    let app = spawn_app(db).await;
    app.endpoint(
        "shop",
        "notify",
        "POST /notify",
        r#"email::send(#{ to: "ada@example.com", subject: "Welcome", text: "Hello Ada" }); "sent""#,
    )
    .await;
    app.endpoint(
        "shop",
        "bad",
        "POST /bad",
        r#"email::send(#{ to: "not an address", subject: "x", text: "y" })"#,
    )
    .await;

    assert_eq!(
        app.call(Method::POST, "/shop/bad")
            .send()
            .await
            .unwrap()
            .status(),
        500
    );
    assert_eq!(
        app.call(Method::POST, "/shop/notify")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "sent"
    );
    let messages = eventually("the email in the mailbox", BOUND, async || {
        let res: Value = app
            .admin(Method::GET, "/apps/shop/mailbox")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let messages = res["messages"].as_array().unwrap().clone();
        (!messages.is_empty()).then_some(messages)
    })
    .await;
    assert_eq!(messages.len(), 1, "exactly the valid email arrived");
    assert_eq!(messages[0]["message"]["subject"], "Welcome");
    assert_eq!(messages[0]["message"]["to"], json!(["ada@example.com"]));
}
