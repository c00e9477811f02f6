//! `/api/v1/apps/{app}/limits` and `.../scripts/{name}/limits` through `router_with_limits`
//! with `oneshot`, on SQLite and on PostgreSQL: what is set is stored and shown with what is
//! in force, a bad body is a 400 that names the field and changes nothing, only an admin
//! token sets or resets limits, and every change reaches the catalog before the answer.
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use shared::{CatalogChange, LimitOverrides, LimitPolicy};
use storage::testing::TestDb;
use testkit::admin::{AdminApp, Checker, Options};
use testkit::{on_both_backends, with_db};

/// The one admin test app (`testkit::admin`) with limits and every source accepted, and
/// this file's shortcuts.
struct Setup(AdminApp);

impl std::ops::Deref for Setup {
    type Target = AdminApp;

    fn deref(&self) -> &AdminApp {
        &self.0
    }
}

/// A server whose [limits] allow 1,000,000 operations, call depth 32, timeouts up to 10 s,
/// with 4 invocations at once per app by default.
fn policy() -> LimitPolicy {
    LimitPolicy {
        defaults: LimitOverrides {
            max_operations: Some(1_000_000),
            max_call_depth: Some(32),
            max_concurrency: Some(4),
            ..LimitPolicy::default().defaults
        },
        max_timeout_ms: 10_000,
    }
}

async fn setup(db: TestDb) -> Setup {
    let options = Options {
        checker: Checker::AcceptAll,
        limits: Some(policy()),
        ..Options::default()
    };
    let s = Setup(AdminApp::on(db, options).await);
    let admin = s.token.clone();
    for app in ["shop", "blog"] {
        let (status, _) = s
            .call(&admin, "POST", "/api/v1/apps", Some(json!({"name": app})))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, _) = s
        .call(
            &admin,
            "PUT",
            "/api/v1/apps/shop/scripts/checkout",
            Some(json!({"source": "\"ok\""})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    s
}

impl Setup {
    async fn call(
        &self,
        token: &str,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let answer = self
            .0
            .raw_as(token, method, uri, Some("application/json"), &body)
            .await;
        (answer.status, answer.body)
    }

    async fn token(&self, role: &str, apps: Option<&[&str]>) -> String {
        self.0.new_token(role, apps).await
    }

    async fn close(self) {
        self.0.close().await;
    }
}

on_both_backends!(
    with_db =>
    limits_set_for_an_app_and_a_script_are_shown_with_what_is_in_force,
    a_bad_limits_body_is_a_400_naming_the_field_and_changes_nothing,
    only_an_admin_sets_or_resets_limits_but_any_covering_token_reads_them,
    limits_of_a_missing_app_or_script_are_404,
);

async fn limits_set_for_an_app_and_a_script_are_shown_with_what_is_in_force(db: TestDb) {
    let s = setup(db).await;
    s.changes();
    let (status, fresh) = s
        .call(&s.token, "GET", "/api/v1/apps/shop/limits", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{fresh}");
    assert_eq!(fresh["overrides"], json!({}));
    assert_eq!(fresh["effective"]["max_operations"], 1_000_000);
    assert_eq!(
        fresh["effective"]["max_concurrency"], 4,
        "the server's default"
    );
    assert_eq!(fresh["effective"]["max_requests_per_sec"], Value::Null);

    let (status, set) = s
        .call(
            &s.token,
            "PUT",
            "/api/v1/apps/shop/limits",
            Some(json!({"timeout_ms": 2_000, "max_concurrency": 2, "max_requests_per_sec": 50})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(
        set["overrides"],
        json!({"timeout_ms": 2_000, "max_concurrency": 2, "max_requests_per_sec": 50})
    );
    assert_eq!(set["effective"]["timeout_ms"], 2_000);
    assert_eq!(set["effective"]["max_concurrency"], 2);
    assert_eq!(set["effective"]["max_call_depth"], 32);
    assert_eq!(
        s.changes(),
        [CatalogChange::Limits {
            app: shared::AppName::parse("shop").unwrap()
        }]
    );

    let (status, script) = s
        .call(
            &s.token,
            "PUT",
            "/api/v1/apps/shop/scripts/checkout/limits",
            Some(json!({"max_operations": 5_000, "max_concurrency": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{script}");
    assert_eq!(script["effective"]["max_operations"], 5_000);
    assert_eq!(script["effective"]["timeout_ms"], 2_000, "the app's");
    assert_eq!(script["effective"]["max_concurrency"], 1, "its own gate");
    assert_eq!(script["effective"]["max_requests_per_sec"], Value::Null);

    // A PUT replaces: the app's timeout is gone, its concurrency stays only if named.
    let (_, replaced) = s
        .call(
            &s.token,
            "PUT",
            "/api/v1/apps/shop/limits",
            Some(json!({"max_concurrency": 3, "max_log_bytes": null})),
        )
        .await;
    assert_eq!(replaced["overrides"], json!({"max_concurrency": 3}));
    assert_eq!(replaced["effective"]["timeout_ms"], 5_000);
    assert_eq!(
        replaced["scripts"],
        json!({"checkout": {"max_operations": 5_000, "max_concurrency": 1}})
    );
    let (_, other) = s
        .call(&s.token, "GET", "/api/v1/apps/blog/limits", None)
        .await;
    assert_eq!(
        other["overrides"],
        json!({}),
        "another app keeps the defaults"
    );

    let (status, _) = s
        .call(
            &s.token,
            "DELETE",
            "/api/v1/apps/shop/scripts/checkout/limits",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = s
        .call(&s.token, "DELETE", "/api/v1/apps/shop/limits", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, after) = s
        .call(&s.token, "GET", "/api/v1/apps/shop/limits", None)
        .await;
    assert_eq!(
        (after["overrides"].clone(), after["scripts"].clone()),
        (json!({}), json!({}))
    );
    assert_eq!(s.changes().len(), 4, "every change is published");
    s.close().await;
}

async fn a_bad_limits_body_is_a_400_naming_the_field_and_changes_nothing(db: TestDb) {
    let s = setup(db).await;
    let (status, _) = s
        .call(
            &s.token,
            "PUT",
            "/api/v1/apps/shop/limits",
            Some(json!({"timeout_ms": 1_000})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    s.changes();
    for (body, says) in [
        (json!({"timeout": 5}), "unknown limit 'timeout'"),
        (
            json!({"timeout_ms": 10_001}),
            "timeout_ms must be an integer from 1 to 10000",
        ),
        (json!({"timeout_ms": 0}), "timeout_ms must be"),
        (
            json!({"max_operations": 1_000_001}),
            "max_operations must be an integer from 1 to 1000000",
        ),
        (json!({"max_call_depth": 33}), "at most the server's own"),
        (json!({"max_concurrency": -1}), "max_concurrency must be"),
        (
            json!({"max_requests_per_sec": "10"}),
            "max_requests_per_sec must be",
        ),
        (json!({"max_string_bytes": 2.5}), "max_string_bytes must be"),
        (json!(["timeout_ms"]), "invalid request body"),
    ] {
        let (status, answer) = s
            .call(
                &s.token,
                "PUT",
                "/api/v1/apps/shop/limits",
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_input");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body}: {message}");
        assert!(
            !message.contains("LimitOverrides") && !message.contains("u64"),
            "{message}"
        );
    }
    let (_, kept) = s
        .call(&s.token, "GET", "/api/v1/apps/shop/limits", None)
        .await;
    assert_eq!(kept["overrides"], json!({"timeout_ms": 1_000}));
    assert!(s.changes().is_empty(), "a refused body publishes nothing");
    s.close().await;
}

async fn only_an_admin_sets_or_resets_limits_but_any_covering_token_reads_them(db: TestDb) {
    let s = setup(db).await;
    let deploy = s.token("deploy", None).await;
    let read_shop = s.token("read", Some(&["shop"])).await;
    let raise = Some(json!({"max_concurrency": 100}));
    for (method, uri) in [
        ("PUT", "/api/v1/apps/shop/limits"),
        ("DELETE", "/api/v1/apps/shop/limits"),
        ("PUT", "/api/v1/apps/shop/scripts/checkout/limits"),
        ("DELETE", "/api/v1/apps/shop/scripts/checkout/limits"),
    ] {
        for token in [&deploy, &read_shop] {
            let (status, body) = s.call(token, method, uri, raise.clone()).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}: {body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("admin")),
                "{body}"
            );
        }
    }
    for token in [&deploy, &read_shop] {
        for uri in [
            "/api/v1/apps/shop/limits",
            "/api/v1/apps/shop/scripts/checkout/limits",
        ] {
            let (status, body) = s.call(token, "GET", uri, None).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        }
    }
    let (status, _) = s
        .call(&read_shop, "GET", "/api/v1/apps/blog/limits", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "out of the token's scope");
    let (_, unchanged) = s
        .call(&s.token, "GET", "/api/v1/apps/shop/limits", None)
        .await;
    assert_eq!(unchanged["overrides"], json!({}));
    s.close().await;
}

async fn limits_of_a_missing_app_or_script_are_404(db: TestDb) {
    let s = setup(db).await;
    let body = Some(json!({"timeout_ms": 100}));
    for (method, uri, missing) in [
        ("GET", "/api/v1/apps/ghost/limits", "app 'ghost'"),
        ("PUT", "/api/v1/apps/ghost/limits", "app 'ghost'"),
        ("DELETE", "/api/v1/apps/ghost/limits", "app 'ghost'"),
        (
            "GET",
            "/api/v1/apps/shop/scripts/nope/limits",
            "script 'nope'",
        ),
        (
            "PUT",
            "/api/v1/apps/shop/scripts/nope/limits",
            "script 'nope'",
        ),
        (
            "DELETE",
            "/api/v1/apps/shop/scripts/nope/limits",
            "script 'nope'",
        ),
        (
            "PUT",
            "/api/v1/apps/ghost/scripts/nope/limits",
            "app 'ghost'",
        ),
    ] {
        let (status, answer) = s.call(&s.token, method, uri, body.clone()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {answer}");
        assert_eq!(
            answer["error"]["message"],
            format!("{missing} does not exist"),
            "{method} {uri}"
        );
    }
    s.close().await;
}
