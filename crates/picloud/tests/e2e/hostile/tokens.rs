//! What a token holder or an app's page tries against the real server: a read token that
//! deploys, a token for app A that reaches app B, two admins deleting each other at once,
//! and one app's origin reaching another app or the platform (docs/security.md, "Tokens
//! and origins").
use picloud::config::TEST_ADMIN_TOKEN;
use reqwest::header::HOST;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestApp, spawn_app, spawn_app_with};
use testkit::{Backend, on_both_backends};

on_both_backends!(
    a_read_token_cannot_deploy_change_replay_or_delete_anything,
    a_token_scoped_to_one_app_cannot_read_or_change_another,
    two_admin_tokens_deleting_each_other_at_once_always_leave_one,
);

/// A new token's (id, secret), made with the test's admin token.
async fn token(app: &TestApp, role: &str, apps: Option<&[&str]>) -> (String, String) {
    let mut body = json!({"name": format!("{role}-token"), "role": role});
    if let Some(apps) = apps {
        body["apps"] = json!(apps);
    }
    let res = app
        .admin(Method::POST, "/tokens")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    (
        created["id"].as_str().unwrap().to_owned(),
        created["token"].as_str().unwrap().to_owned(),
    )
}

fn as_token(app: &TestApp, secret: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.client
        .request(method, format!("{}/api/v1{path}", app.url))
        .bearer_auth(secret)
}

async fn assert_forbidden(res: reqwest::Response, what: &str) {
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "{what}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden", "{what}: {body}");
}

async fn a_read_token_cannot_deploy_change_replay_or_delete_anything(db: Backend) {
    let app = spawn_app(db).await;
    app.endpoint("shop", "hello", "GET /hello", r#""v1""#).await;
    let (_, read) = token(&app, "read", None).await;
    let nil = uuid::Uuid::nil();
    let attempts: Vec<(Method, String, Value)> = vec![
        (
            Method::PUT,
            "/apps/shop/scripts/hello".into(),
            json!({"source": "\"owned\""}),
        ),
        (
            Method::POST,
            "/apps/shop/scripts/hello/rollback".into(),
            json!({"version": 1}),
        ),
        (
            Method::DELETE,
            "/apps/shop/scripts/hello".into(),
            Value::Null,
        ),
        (
            Method::POST,
            "/apps/shop/triggers".into(),
            json!({"kind": "http", "method": "GET", "path": "/x", "script": "hello"}),
        ),
        (
            Method::PUT,
            "/apps/shop/config/k".into(),
            json!({"value": 1}),
        ),
        (
            Method::PUT,
            "/apps/shop/secrets/k".into(),
            json!({"value": "v"}),
        ),
        (Method::DELETE, "/apps/shop/kv/k".into(), Value::Null),
        (
            Method::POST,
            format!("/apps/shop/dead-letters/{nil}/replay"),
            Value::Null,
        ),
        (
            Method::DELETE,
            "/apps/shop/dead-letters".into(),
            Value::Null,
        ),
        (Method::POST, "/apps".into(), json!({"name": "mine"})),
        (Method::DELETE, "/apps/shop".into(), Value::Null),
        (Method::POST, "/tokens".into(), json!({"name": "escalate"})),
        (Method::GET, "/tokens".into(), Value::Null),
    ];
    for (method, path, body) in attempts {
        let mut req = as_token(&app, &read, method.clone(), &path);
        if !body.is_null() {
            req = req.json(&body);
        }
        assert_forbidden(req.send().await.unwrap(), &format!("{method} {path}")).await;
    }
    // Reading works, and nothing changed: the endpoint still answers its first version.
    let script = as_token(&app, &read, Method::GET, "/apps/shop/scripts/hello")
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    let res = app.get("/shop/hello").await;
    assert_eq!(res.text().await.unwrap(), "v1");
}

async fn a_token_scoped_to_one_app_cannot_read_or_change_another(db: Backend) {
    let app = spawn_app(db).await;
    // `blog` keeps a secret; a deploy token for `shop` goes after it.
    app.endpoint("blog", "hello", "GET /hello", r#""blog""#)
        .await;
    let res = app
        .admin(Method::PUT, "/apps/blog/secrets/stripe")
        .json(&json!({"value": "sk_blog_secret"}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    app.create_app("shop").await;
    let (_, shop) = token(&app, "deploy", Some(&["shop"])).await;

    for (method, path) in [
        (Method::GET, "/apps/blog"),
        (Method::GET, "/apps/blog/scripts/hello"),
        (Method::GET, "/apps/blog/secrets"),
        (Method::GET, "/apps/blog/invocations"),
        (Method::GET, "/apps/blog/kv"),
        (Method::PUT, "/apps/blog/scripts/leak"),
        (Method::DELETE, "/apps/blog/secrets/stripe"),
        (Method::GET, "/apps/nonexistent"),
    ] {
        let req = as_token(&app, &shop, method.clone(), path)
            .json(&json!({"source": r#"secrets::get("stripe")"#}));
        assert_forbidden(req.send().await.unwrap(), &format!("{method} {path}")).await;
    }
    // Its own app works, and a script there sees only its own app's secrets.
    let deployed = as_token(&app, &shop, Method::PUT, "/apps/shop/scripts/leak")
        .json(&json!({"source": r#"`${secrets::get("stripe")}`"#}))
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), 201);
    let bound = as_token(&app, &shop, Method::POST, "/apps/shop/triggers")
        .json(&json!({"kind": "http", "method": "GET", "path": "/leak", "script": "leak"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bound.status(), 201);
    let leak = app.get("/shop/leak").await;
    assert_eq!(leak.status(), 200);
    assert!(!leak.text().await.unwrap().contains("sk_blog"));
    // It lists only its own app.
    let listed: Value = as_token(&app, &shop, Method::GET, "/apps")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["apps"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["apps"][0]["name"], "shop");
    // The other app still answers.
    assert_eq!(app.get("/blog/hello").await.text().await.unwrap(), "blog");
}

async fn two_admin_tokens_deleting_each_other_at_once_always_leave_one(db: Backend) {
    let app = spawn_app(db).await;
    let listed: Value = app
        .admin(Method::GET, "/tokens")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut survivor = (
        listed["tokens"][0]["id"].as_str().unwrap().to_owned(),
        TEST_ADMIN_TOKEN.to_owned(),
    );
    for round in 0..10 {
        let res = as_token(&app, &survivor.1, Method::POST, "/tokens")
            .json(&json!({"name": format!("admin-{round}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let created: Value = res.json().await.unwrap();
        let other = (
            created["id"].as_str().unwrap().to_owned(),
            created["token"].as_str().unwrap().to_owned(),
        );
        // Each deletes the other, at once.
        let (a, b) = tokio::join!(
            as_token(
                &app,
                &survivor.1,
                Method::DELETE,
                &format!("/tokens/{}", other.0)
            )
            .send(),
            as_token(
                &app,
                &other.1,
                Method::DELETE,
                &format!("/tokens/{}", survivor.0)
            )
            .send(),
        );
        let statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
        assert_eq!(
            statuses.iter().filter(|s| **s == 204).count(),
            1,
            "round {round}: {statuses:?}"
        );
        // The loser either lost its own token first (401) or met the guard (409).
        assert!(
            statuses.iter().all(|s| [204, 401, 409].contains(s)),
            "round {round}: {statuses:?}"
        );
        let mut working = Vec::new();
        for candidate in [&survivor, &other] {
            let res = as_token(&app, &candidate.1, Method::GET, "/tokens")
                .send()
                .await
                .unwrap();
            if res.status() == 200 {
                working.push(candidate.clone());
            }
        }
        assert_eq!(working.len(), 1, "round {round}: exactly one admin is left");
        survivor = working.remove(0);
    }
    // The survivor is the last admin token and cannot delete itself.
    let last = as_token(
        &app,
        &survivor.1,
        Method::DELETE,
        &format!("/tokens/{}", survivor.0),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(last.status(), 409);
}

/// A server that serves `{app}.apps.test` as the app's own origin; `app_paths` as given.
async fn app_hosts(app_paths: bool) -> TestApp {
    let app = spawn_app_with(Backend::Sqlite, |config| {
        config.http.app_base_domain = Some("apps.test".into());
        config.http.app_paths = app_paths;
    })
    .await;
    app.endpoint("shop", "hello", "GET /hello", r#""shop""#)
        .await;
    app.endpoint("blog", "hello", "GET /hello", r#""blog""#)
        .await;
    app.endpoint(
        "blog",
        "echo",
        "GET /blog/hello",
        r#""blog's own /blog/hello""#,
    )
    .await;
    app
}

async fn on_host(app: &TestApp, host: &str, path: &str) -> (u16, String) {
    let res = app
        .call(Method::GET, path)
        .header(HOST, host)
        .bearer_auth(TEST_ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_app_on_its_own_host_reaches_only_itself_never_another_app_or_the_platform() {
    let app = app_hosts(true).await;
    assert_eq!(
        on_host(&app, "shop.apps.test", "/hello").await,
        (200, "shop".into())
    );
    assert_eq!(
        on_host(&app, "BLOG.apps.test:80", "/hello").await,
        (200, "blog".into())
    );
    // From shop's origin, blog's path is only a path of shop's, which has no such route.
    let (status, _) = on_host(&app, "shop.apps.test", "/blog/hello").await;
    assert_eq!(status, 404);
    // On blog's own host, `/blog/hello` is blog's own route of that name.
    assert_eq!(
        on_host(&app, "blog.apps.test", "/blog/hello").await,
        (200, "blog's own /blog/hello".into())
    );
    // No platform on an app's host: not the admin API (even with a valid token), not health.
    for path in ["/api/v1/apps", "/api/v1/openapi.json", "/healthz"] {
        let (status, body) = on_host(&app, "shop.apps.test", path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains("blog"), "{path}: {body}");
    }
    // Names under the base domain that are no app's answer 404, not the platform.
    for host in ["api.apps.test", "a.shop.apps.test", "ghost.apps.test"] {
        assert_eq!(on_host(&app, host, "/api/v1/apps").await.0, 404, "{host}");
    }
    // Other hosts keep the path-prefixed form and the platform.
    let main = app.url.trim_start_matches("http://").to_owned();
    assert_eq!(
        on_host(&app, &main, "/shop/hello").await,
        (200, "shop".into())
    );
    assert_eq!(on_host(&app, &main, "/api/v1/apps").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_app_paths_off_apps_answer_only_on_their_own_hosts() {
    let app = app_hosts(false).await;
    let main = app.url.trim_start_matches("http://").to_owned();
    assert_eq!(on_host(&app, &main, "/shop/hello").await.0, 404);
    assert_eq!(on_host(&app, &main, "/api/v1/apps").await.0, 200);
    assert_eq!(
        on_host(&app, "shop.apps.test", "/hello").await,
        (200, "shop".into())
    );
}

/// The real CLI against the real binary, as `token`.
fn cli(url: &str, token: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_picloud"))
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

#[test]
fn the_cli_creates_scoped_tokens_and_works_within_their_scope_only() {
    let dir = tempfile::tempdir().unwrap();
    let admin = "pct_cli_scoped_token_test_admin";
    let running = crate::binary::start(dir.path(), &[("PICLOUD_ADMIN_TOKEN", admin)]);
    let url = running.url.clone();
    for name in ["shop", "blog"] {
        let (ok, out) = cli(&url, admin, &["apps", "create", name]);
        assert!(ok, "{out}");
    }
    let (ok, out) = cli(
        &url,
        admin,
        &[
            "tokens", "create", "ci", "--role", "deploy", "--apps", "shop",
        ],
    );
    assert!(ok && out.contains("role deploy, apps shop"), "{out}");
    let ci = out
        .lines()
        .nth(1)
        .expect("the secret line")
        .trim()
        .to_owned();
    let (ok, out) = cli(
        &url,
        admin,
        &["tokens", "create", "viewer", "--role", "read"],
    );
    assert!(ok, "{out}");
    let viewer = out
        .lines()
        .nth(1)
        .expect("the secret line")
        .trim()
        .to_owned();

    let (ok, out) = cli(&url, admin, &["tokens", "list"]);
    assert!(ok, "{out}");
    let ci_row = out.lines().find(|l| l.contains(" ci ")).expect("ci listed");
    assert!(
        ci_row.contains("deploy") && ci_row.contains("shop"),
        "{out}"
    );
    let admin_row = out
        .lines()
        .find(|l| l.contains(" admin "))
        .expect("admin listed");
    assert!(admin_row.contains('*'), "{out}");

    let script = dir.path().join("hello.rhai");
    std::fs::write(&script, "\"hi\"\n").unwrap();
    let file = script.to_str().unwrap();
    let (ok, out) = cli(
        &url,
        &ci,
        &["deploy", "shop", file, "--route", "GET /hello"],
    );
    assert!(ok, "{out}");
    let (ok, out) = cli(&url, &ci, &["deploy", "blog", file]);
    assert!(!ok && out.contains("does not cover app 'blog'"), "{out}");
    let (ok, out) = cli(&url, &ci, &["apps", "list"]);
    assert!(ok && out.contains("shop") && !out.contains("blog"), "{out}");
    let (ok, out) = cli(&url, &ci, &["tokens", "list"]);
    assert!(!ok && out.contains("admin"), "{out}");
    let (ok, out) = cli(&url, &ci, &["tokens", "whoami"]);
    assert!(ok && out.contains("role deploy, apps shop"), "{out}");

    let (ok, out) = cli(&url, &viewer, &["scripts", "list", "shop"]);
    assert!(ok && out.contains("hello"), "{out}");
    let (ok, out) = cli(&url, &viewer, &["deploy", "shop", file]);
    assert!(!ok && out.contains("needs the deploy role"), "{out}");
    let (ok, out) = cli(&url, admin, &["invoke", "shop", "/hello"]);
    assert!(ok && out.contains("hi"), "{out}");
}
