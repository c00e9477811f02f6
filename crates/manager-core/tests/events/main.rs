//! The event and data parts of the admin API (event triggers, dead letters, config and
//! secrets, KV, blobs, the mailbox), the cron scheduler and the retention sweeper, on real
//! SQLite and PostgreSQL stores. Rows the API only reads are made through the storage API
//! (`outbox.apply`, `claim_due`, `commit`), the way the dispatcher makes them.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::Utc;
use http_body_util::BodyExt;
use manager_core::{
    CronScheduler, InvocationSweeper, ManagerDeps, ROUTES, RetentionSweeper, Route, router,
};
use serde_json::{Value, json};
use shared::store::{EventCommit, EventOutcome, TriggerSpec};
use shared::{
    AppName, BlobWrite, Catalog, CatalogChange, CatalogListener, CompileError, Effects,
    EmailMessage, Emit, KvWrite, ScriptChecker, ScriptName, Store, TriggerId,
};
use storage::testing::TestDb;
use testkit::{Backend, eventually, on_both_backends};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Accepts every source: these tests are about triggers and data, not compilation.
struct AcceptAll;

impl ScriptChecker for AcceptAll {
    fn check(&self, _source: &str) -> Result<(), CompileError> {
        Ok(())
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<CatalogChange>>);

#[async_trait]
impl CatalogListener for Recorder {
    async fn catalog_changed(&self, change: &CatalogChange) {
        self.0.lock().expect("lock").push(change.clone());
    }
}

/// How long a loaded machine may take for what a test waits on; never a timing.
const BOUND: Duration = Duration::from_secs(10);

struct TestApp {
    router: Router,
    store: Store,
    token: String,
    catalog: Catalog,
    changes: Arc<Recorder>,
    keep: TestDb,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Vec<u8>,
    body: Value,
}

/// Run `test` on a fresh app on `backend`, then close it.
async fn with_app(backend: Backend, test: impl AsyncFnOnce(&TestApp)) {
    let t = spawn_app(backend).await;
    test(&t).await;
    t.close().await;
}

async fn spawn_app(backend: Backend) -> TestApp {
    let keep = TestDb::new(backend).await;
    let store = keep.store.clone();
    let token = manager_core::bootstrap_admin_token(&store, None)
        .await
        .expect("bootstrap")
        .expect("a first token");
    let catalog = Catalog::default();
    let changes = Arc::new(Recorder::default());
    catalog.subscribe(changes.clone());
    let router = router(ManagerDeps {
        store: store.clone(),
        catalog: catalog.clone(),
        checker: Arc::new(AcceptAll),
        max_script_bytes: ManagerDeps::DEFAULT_MAX_SCRIPT_BYTES,
        realtime: None,
        closing: Default::default(),
    });
    TestApp {
        router,
        store,
        token,
        catalog,
        changes,
        keep,
    }
}

impl TestApp {
    async fn close(self) {
        self.keep.close().await;
    }

    async fn send(&self, req: Request<Body>) -> Answer {
        let res = self.router.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/json"));
        let body = if is_json {
            serde_json::from_slice(&bytes).expect("a JSON body")
        } else {
            Value::Null
        };
        Answer {
            status,
            headers,
            bytes,
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

    /// An app with a deployed script `handler`.
    async fn app_with_script(&self, name: &str) -> AppName {
        let created = self
            .call(Method::POST, "/api/v1/apps", Some(json!({"name": name})))
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        let deployed = self
            .call(
                Method::PUT,
                &format!("/api/v1/apps/{name}/scripts/handler"),
                Some(json!({"source": "1"})),
            )
            .await;
        assert_eq!(deployed.status, StatusCode::CREATED, "{}", deployed.body);
        AppName::parse(name).expect("app name")
    }

    async fn add_trigger(&self, app: &str, body: Value) -> Answer {
        self.call(
            Method::POST,
            &format!("/api/v1/apps/{app}/triggers"),
            Some(body),
        )
        .await
    }

    /// Make one dead letter of `app` the way the dispatcher does: an `invoke_async` event
    /// claimed and committed as dead.
    async fn dead_letter(&self, app: &AppName, payload: Value) {
        let effects = Effects {
            emitted: vec![Emit::InvokeAsync {
                script: ScriptName::parse("handler").expect("script"),
                payload,
            }],
            ..Effects::default()
        };
        self.store.outbox.apply(app, &effects).await.expect("apply");
        let events = self
            .store
            .outbox
            .claim_due("test-node", 100, Duration::from_secs(60))
            .await
            .expect("claim");
        assert!(!events.is_empty(), "the emitted event is due");
        let batch: Vec<_> = events
            .into_iter()
            .map(|event| EventCommit {
                event,
                outcome: EventOutcome::Dead {
                    error: "boom at line 1".into(),
                },
                record: None,
            })
            .collect();
        let lost = self
            .store
            .outbox
            .commit("test-node", &batch)
            .await
            .expect("commit");
        assert!(lost.is_empty());
    }

    fn changes(&self) -> Vec<CatalogChange> {
        std::mem::take(&mut *self.changes.0.lock().expect("lock"))
    }
}

fn assert_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status.as_u16(), status, "body: {}", answer.body);
    assert_eq!(answer.body["error"]["code"], code, "body: {}", answer.body);
}

fn message(answer: &Answer) -> String {
    answer.body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

mod auth;
mod config;
mod cron;
mod data;
mod dead_letters;
mod mailbox;
mod retention;
mod triggers;
