//! The admin API end to end through `router`: a real SQLite store in a tempdir, the real
//! script checker from the executor, and requests sent with `oneshot`.
use axum::http::{Method, StatusCode, header};
use chrono::{Duration, Utc};
use manager_core::{ROUTES, Route, bootstrap_admin_token, hash_token};
use serde_json::{Value, json};
use shared::{
    AppName, CatalogChange, InvocationId, InvocationRecord, InvocationStatus, ScriptName,
};
use storage::testing::TestDb;
use testkit::admin::{AdminApp, Answer, Options, assert_error};
use testkit::{Backend, on_both_backends};

/// The one admin test app (`testkit::admin`), with this file's shortcuts.
struct TestApp(AdminApp);

impl std::ops::Deref for TestApp {
    type Target = AdminApp;

    fn deref(&self) -> &AdminApp {
        &self.0
    }
}

const DEFAULT_LIMIT: usize = 256 * 1024;

/// Run `test` on a fresh app on `backend`, then close it.
async fn with_app(backend: Backend, test: impl AsyncFnOnce(&TestApp)) {
    let t = spawn_app_on(backend, DEFAULT_LIMIT).await;
    test(&t).await;
    t.close().await;
}

async fn spawn_app_on(backend: Backend, max_script_bytes: usize) -> TestApp {
    let options = Options {
        max_script_bytes,
        ..Options::default()
    };
    TestApp(AdminApp::on(TestDb::new(backend).await, options).await)
}

impl TestApp {
    /// Close the pool and drop what the test made (a PostgreSQL test's schema).
    async fn close(self) {
        self.0.close().await;
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
