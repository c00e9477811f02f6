//! The event and data parts of the admin API (event triggers, dead letters, config and
//! secrets, KV, blobs, the mailbox), the cron scheduler and the retention sweeper, on real
//! SQLite and PostgreSQL stores. Rows the API only reads are made through the storage API
//! (`outbox.apply`, `claim_due`, `commit`), the way the dispatcher makes them.
use std::time::Duration;

use axum::http::{Method, StatusCode, header};
use chrono::Utc;
use manager_core::{CronScheduler, InvocationSweeper, ROUTES, RetentionSweeper, Route};
use serde_json::{Value, json};
use shared::store::{EventCommit, EventOutcome, TriggerSpec};
use shared::{
    AppName, BlobWrite, CatalogChange, Effects, EmailMessage, Emit, KvWrite, ScriptName, TriggerId,
};
use storage::testing::TestDb;
use testkit::admin::{AdminApp, Answer, Checker, Options, assert_error};
use testkit::{Backend, eventually, on_both_backends};
use tokio_util::sync::CancellationToken;

/// How long a loaded machine may take for what a test waits on; never a timing.
const BOUND: Duration = Duration::from_secs(10);

/// The one admin test app (`testkit::admin`) with every source accepted (these tests are
/// about triggers and data, not compilation), and this file's shortcuts.
struct TestApp(AdminApp);

impl std::ops::Deref for TestApp {
    type Target = AdminApp;

    fn deref(&self) -> &AdminApp {
        &self.0
    }
}

/// Run `test` on a fresh app on `backend`, then close it.
async fn with_app(backend: Backend, test: impl AsyncFnOnce(&TestApp)) {
    let options = Options {
        checker: Checker::AcceptAll,
        ..Options::default()
    };
    let t = TestApp(AdminApp::on(TestDb::new(backend).await, options).await);
    test(&t).await;
    t.0.close().await;
}

impl TestApp {
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
mod queue_history;
mod retention;
mod triggers;
