//! Per-invocation limits through `ExecutorClient`, on SQLite and PostgreSQL: an invocation
//! runs under the overrides it carries (engine-level sizes included) while the next one
//! without them gets the server's, the stack-sized limits are never raised, and a
//! concurrency slot is free again by the time its answer arrives.
use std::sync::Arc;

use executor_core::{Executor, ExecutorConfig, Limits};
use shared::{
    AppName, CatalogChange, CatalogListener, ExecError, Execution, ExecutorClient, FailureKind,
    HttpRequest, Invocation, InvocationId, InvocationInput, InvocationLimits, LimitOverrides,
    ScriptName,
};
use storage::testing::TestDb;
use testkit::{Backend, on_both_backends};

struct Harness {
    db: TestDb,
    executor: Arc<Executor>,
    app: AppName,
}

impl Harness {
    async fn on(db: TestDb) -> Harness {
        let app = AppName::parse("shop").unwrap();
        db.store.apps.create(&app).await.unwrap();
        let config = ExecutorConfig {
            threads: 2,
            limits: Limits {
                max_operations: 1_000_000,
                ..Limits::default()
            },
            ..ExecutorConfig::default()
        };
        let executor = Executor::start(config, db.store.clone(), tokio::runtime::Handle::current());
        Harness { db, executor, app }
    }

    async fn deploy(&self, script: &str, source: &str) {
        let name = ScriptName::parse(script).unwrap();
        self.db
            .store
            .scripts
            .deploy(&self.app, &name, source)
            .await
            .unwrap();
        let change = CatalogChange::Script {
            app: self.app.clone(),
            script: name,
        };
        self.executor.catalog_changed(&change).await;
    }

    async fn run(&self, script: &str, limits: InvocationLimits) -> Result<Execution, ExecError> {
        self.executor
            .execute(Invocation {
                id: InvocationId::new(),
                app: self.app.clone(),
                script: ScriptName::parse(script).unwrap(),
                input: InvocationInput::Http(HttpRequest::default()),
                request_id: None,
                limits,
            })
            .await
    }

    async fn close(self) {
        self.executor.shutdown();
        self.db.close().await;
    }
}

fn overriding(run: LimitOverrides) -> InvocationLimits {
    InvocationLimits {
        run,
        ..InvocationLimits::default()
    }
}

fn failure(result: Result<Execution, ExecError>) -> (FailureKind, String) {
    let failure = result.unwrap().result.expect_err("the run should fail");
    (failure.kind, failure.message)
}

fn ok(result: Result<Execution, ExecError>) -> String {
    let out = result.unwrap().result.expect("the run should succeed");
    String::from_utf8(out.body.to_vec()).unwrap()
}

async fn an_invocation_runs_under_its_overrides_and_the_next_under_the_servers(h: Harness) {
    h.deploy(
        "count",
        r#"let i = 0; while i < 20000 { i += 1; } "counted""#,
    )
    .await;
    h.deploy(
        "grow",
        r#"let s = "x"; while s.len() < 1000 { s += s; } "grown""#,
    )
    .await;
    h.deploy(
        "chatty",
        r#"for i in 0..10 { print("0123456789"); } "said""#,
    )
    .await;
    let tight = overriding(LimitOverrides {
        max_operations: Some(5_000),
        max_string_bytes: Some(100),
        max_log_bytes: Some(20),
        timeout_ms: Some(1_000),
        ..LimitOverrides::default()
    });
    assert_eq!(
        failure(h.run("count", tight).await),
        (
            FailureKind::LimitExceeded,
            "operation limit exceeded".into()
        )
    );
    assert_eq!(
        failure(h.run("grow", tight).await),
        (
            FailureKind::LimitExceeded,
            "string size limit exceeded".into()
        )
    );
    let chatty = h.run("chatty", tight).await.unwrap();
    assert_eq!(chatty.logs.len(), 3, "two lines and the truncation line");
    // The same scripts right after, without overrides: the server's limits.
    let server = InvocationLimits::default();
    assert_eq!(ok(h.run("count", server).await), "counted");
    assert_eq!(ok(h.run("grow", server).await), "grown");
    assert_eq!(h.run("chatty", server).await.unwrap().logs.len(), 10);
    // And a tight one again: its engine was kept.
    assert_eq!(
        failure(h.run("grow", tight).await).1,
        "string size limit exceeded"
    );
    h.close().await;
}

async fn an_override_never_raises_the_operation_budget_or_the_call_depth(h: Harness) {
    h.deploy(
        "count",
        r#"let i = 0; while i < 1000000 { i += 1; } "counted""#,
    )
    .await;
    h.deploy(
        "deep",
        "fn f(n) { if n == 0 { 0 } else { f(n - 1) } } f(100)",
    )
    .await;
    let greedy = overriding(LimitOverrides {
        max_operations: Some(u64::MAX),
        max_call_depth: Some(1_000_000),
        ..LimitOverrides::default()
    });
    assert_eq!(
        failure(h.run("count", greedy).await).1,
        "operation limit exceeded",
        "the server's 1,000,000 still applies"
    );
    assert_eq!(
        failure(h.run("deep", greedy).await).1,
        "call depth limit exceeded",
        "the server's 64 still applies"
    );
    h.close().await;
}

async fn a_capped_app_gets_its_slot_back_before_its_answer_arrives(h: Harness) {
    h.deploy("hello", r#""hello""#).await;
    let capped = InvocationLimits {
        app_concurrency: Some(1),
        script_concurrency: Some(1),
        ..InvocationLimits::default()
    };
    // One after the other, each waiting for the last answer: never over the cap.
    for _ in 0..20 {
        assert_eq!(ok(h.run("hello", capped).await), "hello");
    }
    h.close().await;
}

/// Run `test` on a harness on a fresh database on `backend`.
async fn with_harness(backend: Backend, test: impl AsyncFnOnce(Harness)) {
    test(Harness::on(TestDb::new(backend).await).await).await;
}

on_both_backends!(
    with_harness =>
    an_invocation_runs_under_its_overrides_and_the_next_under_the_servers,
    an_override_never_raises_the_operation_budget_or_the_call_depth,
    a_capped_app_gets_its_slot_back_before_its_answer_arrives,
);
