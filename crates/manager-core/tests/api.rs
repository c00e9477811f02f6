//! The admin API end to end through `router`: a real SQLite store in a tempdir, the real
//! script checker from the executor, and requests sent with `oneshot`.
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use chrono::{Duration, Utc};
use http_body_util::BodyExt;
use manager_core::{ManagerDeps, ROUTES, Route, bootstrap_admin_token, hash_token, router};
use serde_json::{Value, json};
use shared::{
    AppName, Catalog, CatalogChange, CatalogListener, InvocationId, InvocationRecord,
    InvocationStatus, ScriptName, Store,
};
use storage::testing::TestDb;
use testkit::{Backend, on_both_backends};
use tower::ServiceExt;

/// Every change the manager published, in order.
#[derive(Default)]
struct Recorder(Mutex<Vec<CatalogChange>>);

#[async_trait]
impl CatalogListener for Recorder {
    async fn catalog_changed(&self, change: &CatalogChange) {
        self.0.lock().expect("lock").push(change.clone());
    }
}

struct TestApp {
    router: Router,
    store: Store,
    token: String,
    changes: Arc<Recorder>,
    /// The SQLite file, for tests that read its bytes.
    db_path: Option<std::path::PathBuf>,
    keep: TestDb,
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

const DEFAULT_LIMIT: usize = 256 * 1024;

/// Run `test` on a fresh app on `backend`, then close it.
async fn with_app(backend: Backend, test: impl AsyncFnOnce(&TestApp)) {
    let t = spawn_app_on(backend, DEFAULT_LIMIT).await;
    test(&t).await;
    t.close().await;
}

async fn spawn_app_on(backend: Backend, max_script_bytes: usize) -> TestApp {
    let keep = TestDb::new(backend).await;
    let store = keep.store.clone();
    let db_path = keep.db.sqlite_path();
    let token = bootstrap_admin_token(&store, None)
        .await
        .expect("bootstrap")
        .expect("a first token");
    let executor = executor_core::Executor::start(
        executor_core::ExecutorConfig::default(),
        store.clone(),
        tokio::runtime::Handle::current(),
    );
    let catalog = Catalog::default();
    let changes = Arc::new(Recorder::default());
    catalog.subscribe(changes.clone());
    let router = router(ManagerDeps {
        store: store.clone(),
        catalog,
        checker: executor,
        max_script_bytes,
    });
    TestApp {
        router,
        store,
        token,
        changes,
        db_path,
        keep,
    }
}

impl TestApp {
    /// Close the pool and drop what the test made (a PostgreSQL test's schema).
    async fn close(self) {
        self.keep.close().await;
    }

    async fn send(&self, req: Request<Body>) -> Answer {
        let res = self.router.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        self.send(req.expect("request")).await
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Answer {
        let token = self.token.clone();
        self.call_as(Some(&token), method, uri, body).await
    }

    async fn raw(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        self.send(req.body(Body::from(body.to_owned())).expect("request"))
            .await
    }

    async fn create_app(&self, name: &str) -> Answer {
        self.call(Method::POST, "/api/v1/apps", Some(json!({"name": name})))
            .await
    }

    async fn deploy(&self, app: &str, script: &str, source: &str) -> Answer {
        self.call(
            Method::PUT,
            &format!("/api/v1/apps/{app}/scripts/{script}"),
            Some(json!({"source": source})),
        )
        .await
    }

    async fn add_trigger(&self, app: &str, body: Value) -> Answer {
        self.call(
            Method::POST,
            &format!("/api/v1/apps/{app}/triggers"),
            Some(body),
        )
        .await
    }

    fn changes(&self) -> Vec<CatalogChange> {
        std::mem::take(&mut *self.changes.0.lock().expect("lock"))
    }
}

fn assert_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status.as_u16(), status, "body: {}", answer.body);
    assert_eq!(answer.body["error"]["code"], code, "body: {}", answer.body);
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "body: {}",
        answer.body
    );
}

fn app(name: &str) -> AppName {
    AppName::parse(name).expect("app name")
}

fn script(name: &str) -> ScriptName {
    ScriptName::parse(name).expect("script name")
}

async fn an_app_can_be_created_listed_shown_and_deleted(t: &TestApp) {
    let created = t.create_app("shop").await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.body["name"], "shop");
    assert!(created.body["created_at"].is_string());

    let list = t.call(Method::GET, "/api/v1/apps", None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["apps"][0]["name"], "shop");

    let shown = t.call(Method::GET, "/api/v1/apps/shop", None).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body["name"], "shop");

    let deleted = t.call(Method::DELETE, "/api/v1/apps/shop", None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = t.call(Method::GET, "/api/v1/apps/shop", None).await;
    assert_error(&gone, 404, "not_found");
    assert_eq!(gone.body["error"]["message"], "app 'shop' does not exist");
}

async fn a_duplicate_app_is_a_conflict(t: &TestApp) {
    assert_eq!(t.create_app("shop").await.status, StatusCode::CREATED);
    assert_error(&t.create_app("shop").await, 409, "conflict");
}

async fn reserved_and_malformed_app_names_are_refused(t: &TestApp) {
    let reserved = t.create_app("api").await;
    assert_error(&reserved, 400, "invalid_input");
    assert!(
        reserved.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("reserved"))
    );
    assert_error(&t.create_app("Not A Slug").await, 400, "invalid_input");
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/Bad_Name", None).await,
        400,
        "invalid_input",
    );
}

async fn malformed_json_a_missing_field_and_an_unknown_field_answer_400_json(t: &TestApp) {
    let malformed = t
        .raw(
            Method::POST,
            "/api/v1/apps",
            Some("application/json"),
            "{\"name\":",
        )
        .await;
    assert_error(&malformed, 400, "invalid_input");
    let missing = t.call(Method::POST, "/api/v1/apps", Some(json!({}))).await;
    assert_error(&missing, 400, "invalid_input");
    assert!(
        missing.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("name"))
    );
    let unknown = t
        .call(
            Method::POST,
            "/api/v1/apps",
            Some(json!({"name": "a", "color": "red"})),
        )
        .await;
    assert_error(&unknown, 400, "invalid_input");
    assert!(
        unknown.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("color"))
    );
    let bad_type = t
        .call(Method::POST, "/api/v1/apps", Some(json!({"name": 7})))
        .await;
    assert_error(&bad_type, 400, "invalid_input");
    let no_content_type = t
        .raw(Method::POST, "/api/v1/apps", None, "{\"name\":\"a\"}")
        .await;
    assert_error(&no_content_type, 400, "invalid_input");
}

async fn requests_without_a_valid_token_are_unauthorized(t: &TestApp) {
    let none = t.call_as(None, Method::GET, "/api/v1/apps", None).await;
    assert_error(&none, 401, "unauthorized");
    assert_eq!(none.headers[header::WWW_AUTHENTICATE], "Bearer");
    let wrong = t
        .call_as(Some("pct_wrong"), Method::GET, "/api/v1/apps", None)
        .await;
    assert_error(&wrong, 401, "unauthorized");
    assert_eq!(wrong.headers[header::WWW_AUTHENTICATE], "Bearer");
}

async fn every_route_is_registered_and_needs_a_token_except_the_openapi_document_and_sign_in(
    t: &TestApp,
) {
    // An unregistered path answers 401 without a token too, so a 401 alone proves nothing:
    // with a token, each route must answer something an unregistered path does not.
    let unregistered = |uri: &str| format!("route '{uri}' does not exist");
    let unknown = t.call(Method::GET, "/api/v1/no-such-route", None).await;
    assert_error(&unknown, 404, "not_found");
    assert_eq!(
        unknown.body["error"]["message"],
        unregistered("/api/v1/no-such-route")
    );
    for Route { method, path, .. } in ROUTES {
        let uri = path
            .replace("{app}", "shop")
            .replace("{name}", "hello")
            .replace("{key}", "k")
            .replace("{version}", "1")
            .replace("{id}", &uuid::Uuid::nil().to_string());
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let answer = t.call_as(None, method.clone(), &uri, None).await;
        if *path == "/api/v1/openapi.json" {
            assert_eq!(answer.status, StatusCode::OK);
        } else if *path == "/api/v1/sessions" {
            // Signing in takes a token in its body instead: without one it is a bad request.
            assert_error(&answer, 400, "invalid_input");
        } else {
            assert_error(&answer, 401, "unauthorized");
        }
        let known = t.call(method.clone(), &uri, None).await;
        assert_ne!(
            known.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}"
        );
        assert_ne!(
            known.body["error"]["message"],
            unregistered(&uri),
            "{method} {uri} is not registered"
        );
    }
}

async fn the_openapi_document_is_served_and_lists_every_route(t: &TestApp) {
    let doc = t
        .call_as(None, Method::GET, "/api/v1/openapi.json", None)
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(doc.body["openapi"], "3.1.0");
    for Route { method, path, .. } in ROUTES {
        assert!(
            doc.body["paths"][path][method.to_ascii_lowercase()].is_object(),
            "{method} {path} is not documented"
        );
    }
}

async fn deploying_twice_returns_201_then_200_with_version_2(t: &TestApp) {
    t.create_app("shop").await;
    let first = t.deploy("shop", "hello", "\"hi\"").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["version"], 1);
    assert_eq!(first.body["app"], "shop");
    assert_eq!(first.body["script"], "hello");
    let second = t.deploy("shop", "hello", "\"hello\"").await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body["version"], 2);

    let list = t.call(Method::GET, "/api/v1/apps/shop/scripts", None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["scripts"][0]["name"], "hello");
    assert_eq!(list.body["scripts"][0]["active_version"], 2);
    assert_eq!(list.body["scripts"][0]["latest_version"], 2);

    let shown = t
        .call(Method::GET, "/api/v1/apps/shop/scripts/hello", None)
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body["source"], "\"hello\"");
    assert_eq!(shown.body["active_version"], 2);

    let versions = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/scripts/hello/versions",
            None,
        )
        .await;
    assert_eq!(versions.status, StatusCode::OK);
    assert_eq!(versions.body["versions"][0]["version"], 2);
    assert_eq!(versions.body["versions"][0]["active"], true);
    assert_eq!(versions.body["versions"][1]["version"], 1);
    assert_eq!(versions.body["versions"][1]["active"], false);

    let v1 = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/scripts/hello/versions/1",
            None,
        )
        .await;
    assert_eq!(v1.status, StatusCode::OK);
    assert_eq!(v1.body["source"], "\"hi\"");
    assert_eq!(v1.body["active"], false);
}

async fn a_compile_error_answers_422_with_line_and_column_and_keeps_the_active_version(
    t: &TestApp,
) {
    t.create_app("shop").await;
    assert_eq!(
        t.deploy("shop", "hello", "\"v1\"").await.status,
        StatusCode::CREATED
    );
    let broken = t.deploy("shop", "hello", "let a = 1;\nlet b = ;\n").await;
    assert_error(&broken, 422, "compile_error");
    assert_eq!(broken.body["error"]["line"], 2, "{}", broken.body);
    assert!(
        broken.body["error"]["column"]
            .as_u64()
            .is_some_and(|c| c >= 1)
    );
    assert!(
        broken.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("line 2, column "))
    );

    let active = t
        .store
        .scripts
        .active(&app("shop"), &script("hello"))
        .await
        .expect("active")
        .expect("some");
    assert_eq!(active.version, 1);
    assert_eq!(active.source, "\"v1\"");
    let versions = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/scripts/hello/versions",
            None,
        )
        .await;
    assert_eq!(versions.body["versions"].as_array().map(Vec::len), Some(1));
}

async fn rollback_makes_an_earlier_version_active(t: &TestApp) {
    t.create_app("shop").await;
    t.deploy("shop", "hello", "\"one\"").await;
    t.deploy("shop", "hello", "\"two\"").await;
    let rolled = t
        .call(
            Method::POST,
            "/api/v1/apps/shop/scripts/hello/rollback",
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(rolled.status, StatusCode::OK, "{}", rolled.body);
    assert_eq!(rolled.body["version"], 1);
    let shown = t
        .call(Method::GET, "/api/v1/apps/shop/scripts/hello", None)
        .await;
    assert_eq!(shown.body["source"], "\"one\"");
    assert_eq!(shown.body["active_version"], 1);
    assert_eq!(shown.body["latest_version"], 2);

    let next = t.deploy("shop", "hello", "\"three\"").await;
    assert_eq!(next.body["version"], 3, "version numbers are never reused");

    let missing = t
        .call(
            Method::POST,
            "/api/v1/apps/shop/scripts/hello/rollback",
            Some(json!({"version": 9})),
        )
        .await;
    assert_error(&missing, 404, "not_found");
    assert_eq!(
        missing.body["error"]["message"],
        "version '9' does not exist"
    );
}

async fn unknown_apps_scripts_versions_and_triggers_answer_404(t: &TestApp) {
    let no_app = t.deploy("ghost", "hello", "1").await;
    assert_error(&no_app, 404, "not_found");
    assert_eq!(
        no_app.body["error"]["message"],
        "app 'ghost' does not exist"
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/ghost/scripts", None)
            .await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/ghost/triggers", None)
            .await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/ghost/invocations", None)
            .await,
        404,
        "not_found",
    );

    t.create_app("shop").await;
    let no_script = t
        .call(Method::GET, "/api/v1/apps/shop/scripts/nope", None)
        .await;
    assert_error(&no_script, 404, "not_found");
    assert_eq!(
        no_script.body["error"]["message"],
        "script 'nope' does not exist"
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/shop/scripts/nope/versions", None)
            .await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(Method::DELETE, "/api/v1/apps/shop/scripts/nope", None)
            .await,
        404,
        "not_found",
    );

    t.deploy("shop", "hello", "1").await;
    let no_version = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/scripts/hello/versions/7",
            None,
        )
        .await;
    assert_error(&no_version, 404, "not_found");
    assert_eq!(
        no_version.body["error"]["message"],
        "version '7' does not exist"
    );

    let id = uuid::Uuid::now_v7();
    assert_error(
        &t.call(
            Method::DELETE,
            &format!("/api/v1/apps/shop/triggers/{id}"),
            None,
        )
        .await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(
            Method::GET,
            &format!("/api/v1/apps/shop/invocations/{id}"),
            None,
        )
        .await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(Method::DELETE, &format!("/api/v1/tokens/{id}"), None)
            .await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(
            Method::DELETE,
            "/api/v1/apps/shop/triggers/not-a-uuid",
            None,
        )
        .await,
        400,
        "invalid_input",
    );
    assert_error(
        &t.call(Method::DELETE, "/api/v1/apps/ghost", None).await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn a_script_over_the_limit_answers_413_json() {
    let t = spawn_app_on(Backend::Sqlite, 1024).await;
    t.create_app("shop").await;
    let just_over = t
        .deploy("shop", "big", &format!("\"{}\"", "a".repeat(1100)))
        .await;
    assert_error(&just_over, 413, "payload_too_large");
    let far_over = t
        .deploy("shop", "big", &format!("\"{}\"", "a".repeat(200_000)))
        .await;
    assert_error(&far_over, 413, "payload_too_large");
    let fits = t
        .deploy("shop", "big", &format!("\"{}\"", "a".repeat(900)))
        .await;
    assert_eq!(fits.status, StatusCode::CREATED);
    t.close().await;
}

#[tokio::test]
async fn a_script_under_the_default_limit_may_be_larger_than_other_bodies() {
    let t = spawn_app_on(Backend::Sqlite, DEFAULT_LIMIT).await;
    t.create_app("shop").await;
    // 200 KB: over the 64 KiB cap of other bodies, under the 256 KiB script limit.
    let source = format!("\"{}\"", "a".repeat(200_000));
    let big = t.deploy("shop", "big", &source).await;
    assert_eq!(big.status, StatusCode::CREATED, "{}", big.body);
    let huge_name = "a".repeat(70_000);
    let other = t
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": huge_name})),
        )
        .await;
    assert_error(&other, 413, "payload_too_large");
    t.close().await;
}

async fn a_trigger_can_be_created_listed_and_deleted(t: &TestApp) {
    t.create_app("shop").await;
    t.deploy("shop", "user", "\"u\"").await;
    let created = t
        .add_trigger(
            "shop",
            json!({"kind": "http", "method": "GET", "path": "/users/:id", "script": "user"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["kind"], "http");
    assert_eq!(created.body["method"], "GET");
    assert_eq!(created.body["path"], "/users/:id");
    assert_eq!(created.body["script"], "user");
    assert_eq!(created.body["app"], "shop");
    assert_eq!(created.body["max_attempts"], 5);
    let id = created.body["id"].as_str().expect("id").to_owned();

    let list = t
        .call(Method::GET, "/api/v1/apps/shop/triggers", None)
        .await;
    assert_eq!(list.body["triggers"][0]["id"], id.as_str());

    let deleted = t
        .call(
            Method::DELETE,
            &format!("/api/v1/apps/shop/triggers/{id}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let list = t
        .call(Method::GET, "/api/v1/apps/shop/triggers", None)
        .await;
    assert_eq!(list.body["triggers"].as_array().map(Vec::len), Some(0));
}

async fn bad_triggers_are_refused_with_the_fitting_error(t: &TestApp) {
    t.create_app("shop").await;
    t.deploy("shop", "user", "\"u\"").await;
    let ok = json!({"kind": "http", "method": "POST", "path": "/orders", "script": "user", "max_attempts": 3});
    let created = t.add_trigger("shop", ok.clone()).await;
    assert_eq!(created.body["max_attempts"], 3);

    let dup = t.add_trigger("shop", ok.clone()).await;
    assert_error(&dup, 409, "conflict");

    let platform = t
        .add_trigger(
            "shop",
            json!({"kind": "http", "method": "GET", "path": "/_realtime", "script": "user"}),
        )
        .await;
    assert_error(&platform, 400, "invalid_input");
    assert!(
        platform.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("/_"))
    );

    let kind = t
        .add_trigger("shop", json!({"kind": "webhook", "script": "user"}))
        .await;
    assert_error(&kind, 400, "invalid_input");
    assert_eq!(
        kind.body["error"]["message"],
        "trigger kind 'webhook' is not supported"
    );

    let method = t
        .add_trigger(
            "shop",
            json!({"kind": "http", "method": "FETCH", "path": "/a", "script": "user"}),
        )
        .await;
    assert_error(&method, 400, "invalid_input");

    let attempts = t.add_trigger("shop", json!({"kind": "http", "method": "GET", "path": "/a", "script": "user", "max_attempts": 0})).await;
    assert_error(&attempts, 400, "invalid_input");

    let no_script = t
        .add_trigger(
            "shop",
            json!({"kind": "http", "method": "GET", "path": "/a", "script": "ghost"}),
        )
        .await;
    assert_error(&no_script, 404, "not_found");
    assert_eq!(
        no_script.body["error"]["message"],
        "script 'ghost' does not exist"
    );

    let no_app = t
        .add_trigger(
            "ghost",
            json!({"kind": "http", "method": "GET", "path": "/a", "script": "user"}),
        )
        .await;
    assert_error(&no_app, 404, "not_found");
}

async fn deleting_a_script_deletes_its_triggers(t: &TestApp) {
    t.create_app("shop").await;
    t.deploy("shop", "user", "\"u\"").await;
    t.add_trigger(
        "shop",
        json!({"kind": "http", "method": "GET", "path": "/u", "script": "user"}),
    )
    .await;
    let deleted = t
        .call(Method::DELETE, "/api/v1/apps/shop/scripts/user", None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let triggers = t
        .call(Method::GET, "/api/v1/apps/shop/triggers", None)
        .await;
    assert_eq!(triggers.body["triggers"].as_array().map(Vec::len), Some(0));
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/shop/scripts/user", None)
            .await,
        404,
        "not_found",
    );
}

async fn the_catalog_hears_every_committed_change(t: &TestApp) {
    let shop = app("shop");
    t.create_app("shop").await;
    assert_eq!(t.changes(), vec![CatalogChange::App { app: shop.clone() }]);

    t.deploy("shop", "user", "\"u\"").await;
    t.deploy("shop", "user", "\"v\"").await;
    let script_change = CatalogChange::Script {
        app: shop.clone(),
        script: script("user"),
    };
    assert_eq!(
        t.changes(),
        vec![script_change.clone(), script_change.clone()]
    );

    t.deploy("shop", "user", "let = ;").await;
    assert_eq!(t.changes(), vec![], "a refused deploy changes nothing");

    t.call(
        Method::POST,
        "/api/v1/apps/shop/scripts/user/rollback",
        Some(json!({"version": 1})),
    )
    .await;
    assert_eq!(t.changes(), vec![script_change.clone()]);

    let trigger = t
        .add_trigger(
            "shop",
            json!({"kind": "http", "method": "GET", "path": "/u", "script": "user"}),
        )
        .await;
    assert_eq!(
        t.changes(),
        vec![CatalogChange::Triggers { app: shop.clone() }]
    );
    let id = trigger.body["id"].as_str().expect("id").to_owned();
    t.call(
        Method::DELETE,
        &format!("/api/v1/apps/shop/triggers/{id}"),
        None,
    )
    .await;
    assert_eq!(
        t.changes(),
        vec![CatalogChange::Triggers { app: shop.clone() }]
    );

    t.call(Method::DELETE, "/api/v1/apps/shop/scripts/user", None)
        .await;
    assert_eq!(
        t.changes(),
        vec![script_change, CatalogChange::Triggers { app: shop.clone() }]
    );

    t.call(Method::DELETE, "/api/v1/apps/shop", None).await;
    assert_eq!(t.changes(), vec![CatalogChange::App { app: shop }]);
}

fn record(
    app_name: &str,
    script_name: &str,
    status: InvocationStatus,
    started_at: chrono::DateTime<Utc>,
) -> InvocationRecord {
    InvocationRecord {
        id: InvocationId::new(),
        app: app(app_name),
        script: script(script_name),
        version: Some(1),
        trigger: "http".into(),
        status,
        started_at,
        duration_ms: 3,
        http_status: Some(200),
        summary: "GET /".into(),
        logs: vec![],
        error: None,
        request_id: None,
        attempt: None,
    }
}

async fn invocations_can_be_filtered_and_paged(t: &TestApp) {
    t.create_app("shop").await;
    let base = Utc::now() - Duration::hours(1);
    let mut records = Vec::new();
    for i in 0..5 {
        let status = if i == 2 {
            InvocationStatus::Error
        } else {
            InvocationStatus::Ok
        };
        let name = if i == 4 { "other" } else { "user" };
        records.push(record("shop", name, status, base + Duration::minutes(i)));
    }
    t.store.invocations.record(&records).await.expect("record");

    let all = t
        .call(Method::GET, "/api/v1/apps/shop/invocations", None)
        .await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    let ids: Vec<&str> = all.body["invocations"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 5);
    assert_eq!(ids[0], records[4].id.to_string(), "newest first");
    assert_eq!(all.body["next_before"], Value::Null);

    let page1 = t
        .call(Method::GET, "/api/v1/apps/shop/invocations?limit=2", None)
        .await;
    assert_eq!(page1.body["invocations"].as_array().map(Vec::len), Some(2));
    let cursor = page1.body["next_before"]
        .as_str()
        .expect("a full page has a cursor")
        .to_owned();
    assert_eq!(cursor, records[3].id.to_string());
    let page2 = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/invocations?limit=2&before={cursor}"),
            None,
        )
        .await;
    assert_eq!(
        page2.body["invocations"][0]["id"],
        records[2].id.to_string()
    );
    let page3_cursor = page2.body["next_before"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let page3 = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/invocations?limit=2&before={page3_cursor}"),
            None,
        )
        .await;
    assert_eq!(page3.body["invocations"].as_array().map(Vec::len), Some(1));
    assert_eq!(page3.body["next_before"], Value::Null);

    let errors = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/invocations?status=error",
            None,
        )
        .await;
    assert_eq!(errors.body["invocations"].as_array().map(Vec::len), Some(1));
    assert_eq!(errors.body["invocations"][0]["status"], "error");

    let other = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/invocations?script=other",
            None,
        )
        .await;
    assert_eq!(other.body["invocations"].as_array().map(Vec::len), Some(1));
    assert_eq!(other.body["invocations"][0]["script"], "other");

    let since = (base + Duration::minutes(3)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let recent = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/invocations?since={since}"),
            None,
        )
        .await;
    assert_eq!(
        recent.body["invocations"].as_array().map(Vec::len),
        Some(2),
        "{}",
        recent.body
    );
    let older = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/invocations?until={since}"),
            None,
        )
        .await;
    assert_eq!(
        older.body["invocations"].as_array().map(Vec::len),
        Some(3),
        "{}",
        older.body
    );

    let one = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/invocations/{}", records[1].id),
            None,
        )
        .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body["id"], records[1].id.to_string());
    assert_eq!(one.body["summary"], "GET /");

    for bad in [
        "status=weird",
        "limit=0",
        "limit=501",
        "limit=x",
        "since=yesterday",
        "before=123",
        "script=a/b",
        "colour=red",
    ] {
        let answer = t
            .call(
                Method::GET,
                &format!("/api/v1/apps/shop/invocations?{bad}"),
                None,
            )
            .await;
        assert_error(&answer, 400, "invalid_input");
    }
}

async fn tokens_can_be_created_listed_and_deleted_but_not_the_last_one(t: &TestApp) {
    let created = t
        .call(Method::POST, "/api/v1/tokens", Some(json!({"name": "ci"})))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let secret = created.body["token"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("pct_"));
    assert_eq!(created.body["name"], "ci");
    let ci_id = created.body["id"].as_str().expect("id").to_owned();

    // The new token works.
    let as_ci = t
        .call_as(Some(&secret), Method::GET, "/api/v1/tokens", None)
        .await;
    assert_eq!(as_ci.status, StatusCode::OK);
    let tokens = as_ci.body["tokens"].as_array().expect("tokens");
    assert_eq!(tokens.len(), 2);
    assert!(
        tokens
            .iter()
            .all(|t| t.get("token").is_none() && t.get("secret_hash").is_none())
    );

    // Delete the admin token with the ci one; then the admin token no longer works.
    let admin_id = tokens
        .iter()
        .find(|t| t["name"] == "admin")
        .and_then(|t| t["id"].as_str())
        .expect("admin")
        .to_owned();
    let deleted = t
        .call_as(
            Some(&secret),
            Method::DELETE,
            &format!("/api/v1/tokens/{admin_id}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_error(
        &t.call(Method::GET, "/api/v1/apps", None).await,
        401,
        "unauthorized",
    );

    let last = t
        .call_as(
            Some(&secret),
            Method::DELETE,
            &format!("/api/v1/tokens/{ci_id}"),
            None,
        )
        .await;
    assert_error(&last, 409, "conflict");
    assert_eq!(
        t.call_as(Some(&secret), Method::GET, "/api/v1/apps", None)
            .await
            .status,
        StatusCode::OK
    );

    assert_error(
        &t.call_as(
            Some(&secret),
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": ""})),
        )
        .await,
        400,
        "invalid_input",
    );
}

#[tokio::test]
async fn token_secrets_are_never_stored_in_clear() {
    let t = spawn_app_on(Backend::Sqlite, DEFAULT_LIMIT).await;
    let created = t
        .call(Method::POST, "/api/v1/tokens", Some(json!({"name": "ci"})))
        .await;
    let secret = created.body["token"].as_str().expect("secret").to_owned();
    t.store.health.close().await;
    let db_path = t.db_path.clone().expect("a SQLite test");
    let mut bytes = std::fs::read(&db_path).expect("db file");
    let wal = db_path.with_extension("db-wal");
    if let Ok(more) = std::fs::read(&wal) {
        bytes.extend(more);
    }
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains(&hash_token(&secret)), "the hash is what is stored");
    assert!(!contains(&secret), "the secret is not");
    assert!(!contains(&t.token), "nor the admin's");
}

#[tokio::test]
async fn bootstrap_creates_one_admin_token_only_when_none_exists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = storage::connect(&format!("sqlite://{}/b.db", dir.path().display()))
        .await
        .expect("connect");
    let first = bootstrap_admin_token(&store, None)
        .await
        .expect("bootstrap")
        .expect("created");
    assert!(first.starts_with("pct_") && first.len() == 68);
    let found = store
        .tokens
        .find_by_hash(&hash_token(&first))
        .await
        .expect("find")
        .expect("stored");
    assert_eq!(found.name, "admin");
    assert_eq!(
        bootstrap_admin_token(&store, None).await.expect("again"),
        None
    );
    assert_eq!(store.tokens.count().await.expect("count"), 1);
}

async fn an_admin_token_from_the_environment_is_accepted(t: &TestApp) {
    let env_token = "my-operator-secret";
    assert_eq!(
        bootstrap_admin_token(&t.store, Some(env_token))
            .await
            .expect("bootstrap"),
        None
    );
    // Twice is fine: the hash is stored once.
    assert_eq!(
        bootstrap_admin_token(&t.store, Some(env_token))
            .await
            .expect("bootstrap"),
        None
    );
    assert_eq!(t.store.tokens.count().await.expect("count"), 2);
    let answer = t
        .call_as(Some(env_token), Method::GET, "/api/v1/apps", None)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
}

async fn an_unknown_route_answers_404_json_and_a_wrong_method_405_json(t: &TestApp) {
    t.create_app("shop").await;
    assert_error(
        &t.call(Method::GET, "/api/v1/nothing", None).await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/shop/nothing", None).await,
        404,
        "not_found",
    );
    assert_eq!(
        t.call(Method::GET, "/api/v1/apps/shop", None).await.status,
        StatusCode::OK
    );
    let wrong_method = t.call(Method::PATCH, "/api/v1/apps/shop", None).await;
    assert_error(&wrong_method, 405, "method_not_allowed");
    let allow = wrong_method
        .headers
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok());
    assert!(
        allow.is_some_and(|a| a.contains("GET") && a.contains("DELETE")),
        "{allow:?}"
    );
    let anonymous = t.call_as(None, Method::GET, "/api/v1/nothing", None).await;
    assert_error(&anonymous, 401, "unauthorized");
}

on_both_backends!(
    with_app =>
    an_app_can_be_created_listed_shown_and_deleted,
    a_duplicate_app_is_a_conflict,
    reserved_and_malformed_app_names_are_refused,
    malformed_json_a_missing_field_and_an_unknown_field_answer_400_json,
    requests_without_a_valid_token_are_unauthorized,
    every_route_is_registered_and_needs_a_token_except_the_openapi_document_and_sign_in,
    the_openapi_document_is_served_and_lists_every_route,
    deploying_twice_returns_201_then_200_with_version_2,
    a_compile_error_answers_422_with_line_and_column_and_keeps_the_active_version,
    rollback_makes_an_earlier_version_active,
    unknown_apps_scripts_versions_and_triggers_answer_404,
    a_trigger_can_be_created_listed_and_deleted,
    bad_triggers_are_refused_with_the_fitting_error,
    deleting_a_script_deletes_its_triggers,
    the_catalog_hears_every_committed_change,
    invocations_can_be_filtered_and_paged,
    tokens_can_be_created_listed_and_deleted_but_not_the_last_one,
    an_admin_token_from_the_environment_is_accepted,
    an_unknown_route_answers_404_json_and_a_wrong_method_405_json
);
