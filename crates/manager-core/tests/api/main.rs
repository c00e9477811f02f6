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
        realtime: None,
        closing: Default::default(),
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
        // A backup archive is the one answer that is not JSON.
        let archive = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|ct| ct == "application/x-tar");
        let body = if bytes.is_empty() || archive {
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

mod apps;
mod catalog;
mod errors;
mod invocations;
mod routes;
mod scripts;
mod tokens;
mod triggers;
