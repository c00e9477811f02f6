//! What the OpenAPI document promises, checked on both backends through `router`: answers
//! in plain words (never a Rust type name), and the regressions the API fuzzer
//! (`scripts/fuzz-api.sh`) found, each a schema-valid request the server once refused or
//! failed on.
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::admin::AdminApp;
use testkit::{Backend, on_both_backends};

/// The one admin test app (`testkit::admin`), with this file's shortcuts.
struct App(AdminApp);

impl std::ops::Deref for App {
    type Target = AdminApp;

    fn deref(&self) -> &AdminApp {
        &self.0
    }
}

impl App {
    async fn raw(&self, method: Method, uri: &str, body: &str) -> (StatusCode, Value) {
        let answer = self
            .0
            .raw(method, uri, Some("application/json"), body)
            .await;
        (answer.status, answer.body)
    }

    async fn call(&self, method: Method, uri: &str, body: Value) -> (StatusCode, Value) {
        self.raw(method, uri, &body.to_string()).await
    }

    async fn ok(&self, method: Method, uri: &str, body: Value) -> Value {
        let (status, answer) = self.call(method.clone(), uri, body).await;
        assert!(status.is_success(), "{method} {uri}: {status} {answer}");
        answer
    }
}

/// The fixture for `on_both_backends!(with_app => ...)`: an admin router on a fresh store.
async fn with_app(backend: Backend, test: impl AsyncFnOnce(App)) {
    test(App(AdminApp::start(backend).await)).await;
}

on_both_backends!(
    with_app =>
    an_integer_written_with_a_zero_fraction_is_taken,
    a_body_of_the_wrong_shape_is_refused_in_plain_words,
    nul_in_a_config_value_secret_or_source_is_refused_not_failed,
    a_trigger_is_shown_by_its_id,
);

async fn a_body_of_the_wrong_shape_is_refused_in_plain_words(t: App) {
    t.ok(Method::POST, "/api/v1/apps", json!({"name": "shop"}))
        .await;
    let deploy = "/api/v1/apps/shop/scripts/hello";
    for (body, says) in [
        (r#""x""#, "expected a JSON object, got a string"),
        ("[1]", "expected a JSON object, got an array"),
        (
            r#"{"source": 1}"#,
            "source: expected a string, got the number 1",
        ),
        (r#"{"source": "1", "x": 2}"#, "unknown field `x`"),
        ("{", "malformed JSON"),
    ] {
        let (status, answer) = t.raw(Method::PUT, deploy, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().expect("message");
        assert!(message.contains(says), "{body}: {message}");
        for rust in ["struct", "DeployBody", "invalid type", "line 1"] {
            assert!(!message.contains(rust), "{body}: {message}");
        }
    }
    let (status, answer) = t
        .raw(
            Method::POST,
            "/api/v1/apps/shop/scripts/hello/rollback",
            r#"{"version": "2"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = answer["error"]["message"].as_str().expect("message");
    assert!(
        message.starts_with("invalid request body: version: expected a")
            && message.ends_with("got the string \"2\""),
        "{message}"
    );
    let (status, answer) = t.raw(Method::PUT, "/api/v1/apps/shop/limits", "[]").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer["error"]["message"],
        "invalid request body: expected a JSON object, got an array"
    );
    t.0.close().await;
}

async fn nul_in_a_config_value_secret_or_source_is_refused_not_failed(t: App) {
    t.ok(Method::POST, "/api/v1/apps", json!({"name": "shop"}))
        .await;
    for (uri, body) in [
        ("/api/v1/apps/shop/config/k", json!({"value": "a\u{0}b"})),
        (
            "/api/v1/apps/shop/config/k",
            json!({"value": {"a\u{0}": 1}}),
        ),
        ("/api/v1/apps/shop/config/k", json!({"value": [["\u{0}"]]})),
        ("/api/v1/apps/shop/secrets/s", json!({"value": "\u{0}"})),
        (
            "/api/v1/apps/shop/scripts/s",
            json!({"source": "let a = \"\u{0}\"; a"}),
        ),
    ] {
        let (status, answer) = t.call(Method::PUT, uri, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri} {body}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("NUL")),
            "{answer}"
        );
    }
    let set = t
        .ok(
            Method::PUT,
            "/api/v1/apps/shop/config/k",
            json!({"value": {"a": ["b", 1, null]}}),
        )
        .await;
    assert_eq!(set["value"], json!({"a": ["b", 1, null]}));
    t.0.close().await;
}

async fn a_trigger_is_shown_by_its_id(t: App) {
    t.ok(Method::POST, "/api/v1/apps", json!({"name": "shop"}))
        .await;
    t.ok(
        Method::PUT,
        "/api/v1/apps/shop/scripts/hello",
        json!({"source": "\"hi\""}),
    )
    .await;
    let created = t
        .ok(
            Method::POST,
            "/api/v1/apps/shop/triggers",
            json!({"kind": "cron", "schedule": "0 3 * * *", "script": "hello"}),
        )
        .await;
    let id = created["id"].as_str().expect("id");
    let shown = t
        .ok(
            Method::GET,
            &format!("/api/v1/apps/shop/triggers/{id}"),
            Value::Null,
        )
        .await;
    assert_eq!(shown["id"], created["id"]);
    assert_eq!(shown["schedule"], "0 3 * * *");
    assert!(shown["next_fire_at"].is_string(), "{shown}");
    let (status, answer) = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/triggers/{}", uuid::Uuid::nil()),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let (status, _) = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/ghost/triggers/{id}"),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    t.0.close().await;
}

/// Found by the fuzzer: JSON Schema's `integer` includes `1.0`, so the server takes it for
/// a version, `max_attempts` and every limit.
async fn an_integer_written_with_a_zero_fraction_is_taken(t: App) {
    t.ok(Method::POST, "/api/v1/apps", json!({"name": "shop"}))
        .await;
    t.ok(
        Method::PUT,
        "/api/v1/apps/shop/scripts/hello",
        json!({"source": "\"hi\""}),
    )
    .await;
    let trigger = t
        .ok(
            Method::POST,
            "/api/v1/apps/shop/triggers",
            json!({"kind": "topic", "topic": "t", "script": "hello", "max_attempts": 98.0}),
        )
        .await;
    assert_eq!(trigger["max_attempts"], 98);
    let route = t
        .ok(
            Method::POST,
            "/api/v1/apps/shop/triggers",
            json!({"kind": "http", "method": "PUT", "path": "/once", "script": "hello",
                "idempotency": {"ttl_secs": 2_041_136.0}}),
        )
        .await;
    assert_eq!(route["idempotency"]["ttl_secs"], 2_041_136);
    let rolled = t
        .ok(
            Method::POST,
            "/api/v1/apps/shop/scripts/hello/rollback",
            json!({"version": 1.0}),
        )
        .await;
    assert_eq!(rolled["version"], 1);
    let limits = t
        .ok(
            Method::PUT,
            "/api/v1/apps/shop/limits",
            json!({"max_output_bytes": 1_863_341.0, "max_concurrency": 604.0}),
        )
        .await;
    assert_eq!(limits["overrides"]["max_output_bytes"], 1_863_341);
    assert_eq!(limits["overrides"]["max_concurrency"], 604);
    let (status, _) = t
        .call(
            Method::PUT,
            "/api/v1/apps/shop/limits",
            json!({"max_concurrency": 1.5}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    t.0.close().await;
}
