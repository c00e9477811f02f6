//! The one admin-API test app: `manager_core::router` on a fresh store (SQLite or
//! PostgreSQL), a bootstrap admin token, a catalog whose changes are recorded, and requests
//! sent with `oneshot` (no socket). Every manager-core test file builds on it.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use manager_core::{ManagerDeps, bootstrap_admin_token, router, router_with_limits};
use serde_json::Value;
use shared::{
    Catalog, CatalogChange, CatalogListener, CompileError, LimitPolicy, ScriptChecker, Store,
};
use tower::ServiceExt;

use crate::{Backend, TestDb};

/// Accepts every source: for tests about something other than compilation.
pub struct AcceptAll;

impl ScriptChecker for AcceptAll {
    fn check(&self, _source: &str) -> Result<(), CompileError> {
        Ok(())
    }
}

/// Which script checker the app's deploys go through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Checker {
    /// The real one: the executor compiles each source.
    #[default]
    Executor,
    /// [`AcceptAll`].
    AcceptAll,
}

/// How to build the app; `Options::default()` is the server's defaults.
#[derive(Clone, Debug)]
pub struct Options {
    pub checker: Checker,
    pub max_script_bytes: usize,
    /// `router_with_limits` with this policy instead of `router`.
    pub limits: Option<LimitPolicy>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            checker: Checker::Executor,
            max_script_bytes: ManagerDeps::DEFAULT_MAX_SCRIPT_BYTES,
            limits: None,
        }
    }
}

/// Every change the manager published, in order.
#[derive(Default)]
struct Recorder(Mutex<Vec<CatalogChange>>);

#[async_trait]
impl CatalogListener for Recorder {
    async fn catalog_changed(&self, change: &CatalogChange) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(change.clone());
    }
}

/// How a request authenticates.
#[derive(Clone, Copy, Debug)]
pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    /// The dashboard's session cookie, and the CSRF header if any.
    Cookie(&'a str, Option<&'a str>),
}

/// One answer: its status, headers, raw bytes, and the body as JSON (`Null` when it is
/// empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
    pub body: Value,
}

/// The admin API on a fresh store.
pub struct AdminApp {
    pub router: Router,
    pub store: Store,
    pub catalog: Catalog,
    /// The bootstrap admin token's secret.
    pub token: String,
    /// The database; closed (a PostgreSQL schema dropped) by [`close`](AdminApp::close).
    pub db: TestDb,
    changes: Arc<Recorder>,
}

impl AdminApp {
    /// The app with the server's defaults on a fresh database of `backend`.
    pub async fn start(backend: Backend) -> Self {
        Self::on(TestDb::new(backend).await, Options::default()).await
    }

    /// The app with `options` on `db`.
    ///
    /// # Panics
    /// When the bootstrap token cannot be made.
    pub async fn on(db: TestDb, options: Options) -> Self {
        let store = db.store.clone();
        let token = bootstrap_admin_token(&store, None)
            .await
            .expect("bootstrap")
            .expect("a first token");
        let checker: Arc<dyn ScriptChecker> = match options.checker {
            Checker::Executor => executor_core::Executor::start(
                executor_core::ExecutorConfig::default(),
                store.clone(),
                tokio::runtime::Handle::current(),
            ),
            Checker::AcceptAll => Arc::new(AcceptAll),
        };
        let catalog = Catalog::default();
        let changes = Arc::new(Recorder::default());
        catalog.subscribe(changes.clone());
        let deps = ManagerDeps {
            store: store.clone(),
            catalog: catalog.clone(),
            checker,
            max_script_bytes: options.max_script_bytes,
            realtime: None,
            closing: Default::default(),
            this_node: None,
        };
        let router = match options.limits {
            Some(policy) => router_with_limits(deps, policy),
            None => router(deps),
        };
        AdminApp {
            router,
            store,
            catalog,
            token,
            db,
            changes,
        }
    }

    /// Close the pool and drop what the test made (a PostgreSQL test's schema).
    pub async fn close(self) {
        self.db.close().await;
    }

    /// The SQLite file, for tests that read its bytes.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.db.db.sqlite_path()
    }

    /// Every catalog change since the last call, in order.
    ///
    /// # Panics
    /// Never in practice (a poisoned lock is recovered).
    pub fn changes(&self) -> Vec<CatalogChange> {
        std::mem::take(
            &mut *self
                .changes
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Send `req` through the router.
    ///
    /// # Panics
    /// When the body cannot be read.
    pub async fn send(&self, req: Request<Body>) -> Answer {
        let res = self.router.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let headers = res.headers().clone();
        // A live stream (`text/event-stream`) never ends: its status and headers are the answer.
        if headers
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|v| v == "text/event-stream")
        {
            return Answer {
                status,
                headers,
                bytes: Vec::new(),
                body: Value::Null,
            };
        }
        let bytes = res
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            bytes,
            body,
        }
    }

    /// `method uri` authenticated by `auth`, with `body` as JSON.
    ///
    /// # Panics
    /// When the request cannot be built.
    pub async fn request(
        &self,
        auth: Auth<'_>,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        match auth {
            Auth::None => {}
            Auth::Bearer(t) => req = req.header(header::AUTHORIZATION, format!("Bearer {t}")),
            Auth::Cookie(secret, csrf) => {
                req = req.header(
                    header::COOKIE,
                    format!("theme=dark; picloud_session={secret}"),
                );
                if let Some(csrf) = csrf {
                    req = req.header("x-csrf-token", csrf);
                }
            }
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        self.send(req.expect("request")).await
    }

    /// `method uri` with `token` (none: unauthenticated).
    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> Answer {
        let auth = token.map_or(Auth::None, Auth::Bearer);
        self.request(auth, method, uri, body).await
    }

    /// `method uri` as the bootstrap admin.
    pub async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Answer {
        self.request(Auth::Bearer(&self.token), method, uri, body)
            .await
    }

    /// `method uri` as `token` with a raw body and content type.
    ///
    /// # Panics
    /// When the request cannot be built.
    pub async fn raw_as(
        &self,
        token: &str,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        self.send(req.body(Body::from(body.to_owned())).expect("request"))
            .await
    }

    /// `method uri` as the bootstrap admin with a raw body and content type.
    pub async fn raw(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> Answer {
        self.raw_as(&self.token, method, uri, content_type, body)
            .await
    }

    /// A new token of `role` (scoped to `apps` if given), made by the admin: its secret.
    ///
    /// # Panics
    /// When the API refuses it.
    pub async fn new_token(&self, role: &str, apps: Option<&[&str]>) -> String {
        let mut body = serde_json::json!({"name": format!("{role}-token"), "role": role});
        if let Some(apps) = apps {
            body["apps"] = serde_json::json!(apps);
        }
        let answer = self.call(Method::POST, "/api/v1/tokens", Some(body)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        answer.body["token"]
            .as_str()
            .expect("the token's secret")
            .to_owned()
    }
}

/// Run `test` on a fresh app with the server's defaults on `backend`, then close it: the
/// fixture for `on_both_backends!(with_admin => ...)`.
pub async fn with_admin(backend: Backend, test: impl AsyncFnOnce(&AdminApp)) {
    let app = AdminApp::start(backend).await;
    test(&app).await;
    app.close().await;
}

/// The answer is the JSON error `code` with `status` and a message.
///
/// # Panics
/// When it is not.
pub fn assert_error(answer: &Answer, status: u16, code: &str) {
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
