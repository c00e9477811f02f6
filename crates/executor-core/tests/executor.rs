//! The executor against a real store (SQLite in a temporary directory, and PostgreSQL):
//! deploy scripts, run them through `ExecutorClient`, and check what comes back.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use executor_core::{Executor, ExecutorConfig, Limits};
use shared::{
    AppName, CatalogChange, CatalogListener, ExecError, Execution, ExecutorClient, FailureKind,
    HttpRequest, Invocation, InvocationId, InvocationInput, LogLevel, ScriptChecker, ScriptName,
    Store,
};
use storage::testing::{TestDb, postgres_store, sqlite_store};

struct Harness {
    db: TestDb,
    executor: Arc<Executor>,
    app: AppName,
}

impl Harness {
    async fn on(db: TestDb, config: ExecutorConfig) -> Harness {
        let app = AppName::parse("shop").unwrap();
        db.store.apps.create(&app).await.unwrap();
        let executor = Executor::start(config, db.store.clone(), tokio::runtime::Handle::current());
        Harness { db, executor, app }
    }

    async fn sqlite(config: ExecutorConfig) -> Harness {
        Harness::on(sqlite_store().await, config).await
    }

    fn store(&self) -> &Store {
        &self.db.store
    }

    async fn deploy(&self, script: &str, source: &str) -> i64 {
        let name = ScriptName::parse(script).unwrap();
        let version = self
            .store()
            .scripts
            .deploy(&self.app, &name, source)
            .await
            .unwrap()
            .version;
        let change = CatalogChange::Script {
            app: self.app.clone(),
            script: name,
        };
        self.executor.catalog_changed(&change).await;
        version
    }

    /// Store a new version without telling the executor (no catalog change).
    async fn deploy_unseen(&self, script: &str, source: &str) {
        let name = ScriptName::parse(script).unwrap();
        self.store()
            .scripts
            .deploy(&self.app, &name, source)
            .await
            .unwrap();
    }

    async fn call(&self, script: &str, req: HttpRequest) -> Result<Execution, ExecError> {
        self.executor
            .execute(Invocation {
                id: InvocationId::new(),
                app: self.app.clone(),
                script: ScriptName::parse(script).unwrap(),
                input: InvocationInput::Http(req),
                request_id: None,
                limits: Default::default(),
            })
            .await
    }

    async fn get(&self, script: &str) -> Execution {
        self.call(script, HttpRequest::default()).await.unwrap()
    }

    async fn close(self) {
        self.executor.shutdown();
        self.db.close().await;
    }
}

fn one_thread(limits: Limits) -> ExecutorConfig {
    ExecutorConfig {
        threads: 1,
        queue_capacity: 8,
        limits,
        ..ExecutorConfig::default()
    }
}

fn body(e: &Execution) -> String {
    let out = e.result.as_ref().expect("the script should succeed");
    String::from_utf8(out.body.to_vec()).unwrap()
}

async fn hello_world_and_redeploy(h: Harness) {
    assert_eq!(h.deploy("hello", r#""hello world""#).await, 1);
    let first = h.get("hello").await;
    assert_eq!(first.version, 1);
    assert_eq!(body(&first), "hello world");
    let out = first.result.as_ref().unwrap();
    assert_eq!(out.status, 200);
    assert!(
        out.headers
            .contains(&("content-type".into(), "text/plain; charset=utf-8".into()))
    );

    assert_eq!(h.deploy("hello", r#"#{ greeting: "hi" }"#).await, 2);
    let second = h.get("hello").await;
    assert_eq!(second.version, 2);
    assert_eq!(body(&second), r#"{"greeting":"hi"}"#);
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_script_runs_and_a_redeploy_serves_the_new_version_on_sqlite() {
    hello_world_and_redeploy(Harness::sqlite(ExecutorConfig::default()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_script_runs_and_a_redeploy_serves_the_new_version_on_postgres() {
    let h = Harness::on(postgres_store().await, ExecutorConfig::default()).await;
    hello_world_and_redeploy(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compiled_script_is_cached_until_its_catalog_change_arrives() {
    let h = Harness::sqlite(ExecutorConfig::default()).await;
    h.deploy("v", r#""one""#).await;
    assert_eq!(body(&h.get("v").await), "one");
    // A deploy the executor is not told about: the cached version keeps serving.
    h.deploy_unseen("v", r#""two""#).await;
    assert_eq!(body(&h.get("v").await), "one");
    h.executor
        .catalog_changed(&CatalogChange::App { app: h.app.clone() })
        .await;
    let after = h.get("v").await;
    assert_eq!((after.version, body(&after).as_str()), (2, "two"));
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploys_catalog_change_compiles_the_new_version_before_its_first_run() {
    let h = Harness::sqlite(ExecutorConfig::default()).await;
    h.deploy("v", r#""one""#).await;
    h.deploy("other", r#""x""#).await;
    // Stored behind the executor's back: a first run that read the store would answer
    // "two"; the version compiled by the catalog change answers "one".
    h.deploy_unseen("v", r#""two""#).await;
    // Another script's change leaves this one compiled.
    h.executor
        .catalog_changed(&CatalogChange::Script {
            app: h.app.clone(),
            script: ScriptName::parse("other").unwrap(),
        })
        .await;
    let first = h.get("v").await;
    assert_eq!((first.version, body(&first).as_str()), (1, "one"));
    // Its own change compiles the new version at once.
    h.executor
        .catalog_changed(&CatalogChange::Script {
            app: h.app.clone(),
            script: ScriptName::parse("v").unwrap(),
        })
        .await;
    h.deploy_unseen("v", r#""three""#).await;
    let next = h.get("v").await;
    assert_eq!((next.version, body(&next).as_str()), (2, "two"));
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_removed_from_the_store_is_not_found() {
    let h = Harness::sqlite(ExecutorConfig::default()).await;
    h.deploy("gone", r#""here""#).await;
    assert_eq!(body(&h.get("gone").await), "here");
    let name = ScriptName::parse("gone").unwrap();
    h.store().scripts.delete(&h.app, &name).await.unwrap();
    h.executor
        .catalog_changed(&CatalogChange::Script {
            app: h.app.clone(),
            script: name,
        })
        .await;
    let err = h.call("gone", HttpRequest::default()).await.unwrap_err();
    assert!(
        matches!(err, ExecError::ScriptNotFound(ref s) if s == "gone"),
        "{err:?}"
    );
    let err = h.call("never", HttpRequest::default()).await.unwrap_err();
    assert!(matches!(err, ExecError::ScriptNotFound(_)), "{err:?}");
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_fields_reach_the_script_and_response_sets_status_and_headers() {
    let h = Harness::sqlite(ExecutorConfig::default()).await;
    h.deploy(
        "echo",
        r#"response(201, #{ id: request.params.id, q: request.query.q, agent: request.headers["user-agent"],
            method: request.method, path: request.path, raw: request.body, n: request.json.n },
            #{ "X-Echo": "yes" })"#,
    )
    .await;
    let req = HttpRequest {
        method: "POST".into(),
        path: "/users/42".into(),
        params: BTreeMap::from([("id".into(), "42".into())]),
        query: BTreeMap::from([("q".into(), "pi".into())]),
        headers: [("user-agent", "test")].into(),
        body: r#"{"n": 3}"#.into(),
    };
    let e = h.call("echo", req).await.unwrap();
    let out = e.result.as_ref().unwrap();
    assert_eq!(out.status, 201);
    assert!(out.headers.contains(&("x-echo".into(), "yes".into())));
    assert!(
        out.headers
            .contains(&("content-type".into(), "application/json".into()))
    );
    let json: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"id": "42", "q": "pi", "agent": "test", "method": "POST",
            "path": "/users/42", "raw": r#"{"n": 3}"#, "n": 3})
    );
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_and_log_lines_are_captured_in_order() {
    let h = Harness::sqlite(ExecutorConfig::default()).await;
    h.deploy(
        "logs",
        r#"print("a"); log::info("b"); log::warn("c"); log::error("d"); "ok""#,
    )
    .await;
    let e = h.get("logs").await;
    let lines: Vec<(LogLevel, &str)> = e
        .logs
        .iter()
        .map(|l| (l.level, l.message.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            (LogLevel::Print, "a"),
            (LogLevel::Info, "b"),
            (LogLevel::Warn, "c"),
            (LogLevel::Error, "d")
        ]
    );
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_stop_loops_recursion_and_growth_without_killing_the_thread() {
    let limits = Limits {
        max_operations: 200_000,
        max_array_len: 1000,
        ..Limits::default()
    };
    let h = Harness::sqlite(one_thread(limits)).await;
    h.deploy("spin", "loop {}").await;
    h.deploy("deep", "fn f(x) { f(x + 1) } f(0)").await;
    h.deploy("strings", r#"let s = "x"; loop { s += s; }"#)
        .await;
    h.deploy("arrays", "let a = []; loop { a.push(1); }").await;
    h.deploy("boom", "let x = 1;\nthrow \"boom\";").await;
    h.deploy("ok", r#""still here""#).await;
    for (script, kind, message) in [
        (
            "spin",
            FailureKind::LimitExceeded,
            "operation limit exceeded",
        ),
        (
            "deep",
            FailureKind::LimitExceeded,
            "call depth limit exceeded",
        ),
        (
            "strings",
            FailureKind::LimitExceeded,
            "string size limit exceeded",
        ),
        (
            "arrays",
            FailureKind::LimitExceeded,
            "array size limit exceeded",
        ),
        (
            "boom",
            FailureKind::Error,
            "Runtime error: boom (line 2, position 1)",
        ),
    ] {
        let e = h.get(script).await;
        let f = e.result.unwrap_err();
        assert_eq!((f.kind, f.message.as_str()), (kind, message), "{script}");
    }
    assert_eq!(body(&h.get("ok").await), "still here");
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wall_clock_stops_a_script_and_the_same_thread_serves_the_next_job() {
    let limits = Limits {
        max_operations: u64::MAX,
        timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let h = Harness::sqlite(one_thread(limits)).await;
    h.deploy("slow", "let i = 0; loop { i += 1; }").await;
    h.deploy("fast", r#""fast""#).await;
    let started = Instant::now();
    let e = h.get("slow").await;
    let f = e.result.unwrap_err();
    assert_eq!(f.kind, FailureKind::Timeout);
    assert_eq!(f.message, "wall-clock limit of 300ms exceeded");
    assert!(e.duration >= Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(body(&h.get("fast").await), "fast");
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_refused_at_once_with_overloaded() {
    let limits = Limits {
        max_operations: u64::MAX,
        timeout: Duration::from_millis(1500),
        ..Limits::default()
    };
    let config = ExecutorConfig {
        threads: 1,
        queue_capacity: 1,
        limits,
        ..ExecutorConfig::default()
    };
    let h = Arc::new(Harness::sqlite(config).await);
    h.deploy("slow", "loop {}").await;
    // One runs, one waits in the queue: of three, at least one has no room.
    let mut calls = Vec::new();
    for _ in 0..3 {
        let h = Arc::clone(&h);
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            let result = h.call("slow", HttpRequest::default()).await;
            (result, started.elapsed())
        }));
    }
    let mut overloaded = 0;
    for call in calls {
        let (result, took) = call.await.unwrap();
        if matches!(result, Err(ExecError::Overloaded)) {
            overloaded += 1;
            assert!(took < Duration::from_millis(500), "refused after {took:?}");
        } else {
            assert_eq!(
                result.unwrap().result.unwrap_err().kind,
                FailureKind::Timeout
            );
        }
    }
    assert!(overloaded >= 1);
    let Ok(h) = Arc::try_unwrap(h) else {
        panic!("the harness is still shared")
    };
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compile_errors_come_with_line_and_column() {
    let h = Harness::sqlite(ExecutorConfig::default()).await;
    assert!(h.executor.check(r#""fine""#).is_ok());
    let err = h.executor.check("let a = 1;\nlet b = ;").unwrap_err();
    assert_eq!((err.line, err.column), (2, 9));
    let err = h.executor.check(r#"eval("1")"#).unwrap_err();
    assert!(err.message.contains("eval"), "{}", err.message);
    h.close().await;
}

#[test]
fn the_standalone_checker_refuses_what_the_executor_refuses() {
    let checker: Arc<dyn ScriptChecker> = Arc::new(Executor::checker(Limits::default()));
    assert!(checker.check("let x = 1; x + 1").is_ok());
    let err = checker.check("let x = 1;\nx +").unwrap_err();
    assert_eq!(err.line, 2);
    assert!(checker.check(r#"eval("1")"#).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_no_job_is_taken() {
    let h = Harness::sqlite(ExecutorConfig::default()).await;
    h.deploy("hello", r#""hi""#).await;
    assert_eq!(body(&h.get("hello").await), "hi");
    h.executor.shutdown();
    h.executor.shutdown();
    let err = h.call("hello", HttpRequest::default()).await.unwrap_err();
    assert!(matches!(err, ExecError::Overloaded), "{err:?}");
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_version_that_does_not_compile_fails_the_run_with_its_position() {
    let h = Harness::sqlite(ExecutorConfig::default()).await;
    // The store does not compile; a deploy that skipped the check leaves a broken version.
    let version = h.deploy("broken", "let a = ;").await;
    let e = h.get("broken").await;
    assert_eq!(e.version, version);
    let f = e.result.unwrap_err();
    assert_eq!(f.kind, FailureKind::Error);
    assert!(
        f.message
            .starts_with("the active version does not compile: line 1, column 9"),
        "{}",
        f.message
    );
    h.close().await;
}

/// A map nested `levels` deep, built as a hostile script would (a linked list).
fn linked_list(levels: usize) -> String {
    format!("let l = (); for i in 0..{levels} {{ l = #{{ n: take(l) }}; }}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_value_is_a_script_error_wherever_it_is_walked() {
    // 3,000 levels: far past the cap, and deep enough to overflow a script thread's stack
    // if any of these walked it with the engine's recursion (a debug build's frames are big).
    let limits = Limits {
        timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let h = Harness::sqlite(one_thread(limits)).await;
    let list = linked_list(3_000);
    let uses = [
        ("print", "print(l);"),
        ("debug", "debug(l);"),
        ("to_string", "l.to_string()"),
        ("to_debug", "l.to_debug()"),
        ("to_string", "`value: ${l}`"),
        ("to_string", "\"value: \" + l"),
        ("==", "l == l"),
        ("!=", "[l] != [l]"),
        ("==", "l in [1, l]"),
        ("json::stringify", "json::stringify(l)"),
        ("log", "log::info(l);"),
        ("kv::set: value", "kv::set(\"k\", l);"),
        ("pubsub::publish: payload", "pubsub::publish(\"t\", l);"),
        ("the returned value", "l"),
        ("the thrown value", "throw l;"),
        ("response: header", "response(200, \"x\", #{ \"x-a\": l })"),
    ];
    for (i, (what, tail)) in uses.iter().enumerate() {
        let script = format!("deep{i}");
        h.deploy(&script, &format!("{list}{tail}")).await;
        let run = h.get(&script).await;
        let Err(failure) = run.result else {
            panic!("{tail}: the run should fail");
        };
        assert!(
            failure.message.contains(what) && failure.message.contains("deeper than 100 levels"),
            "{tail}: {}",
            failure.message.chars().take(300).collect::<String>()
        );
    }
    // The same thread still serves ordinary scripts.
    h.deploy("hello", r#""hello""#).await;
    assert_eq!(body(&h.get("hello").await), "hello");
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_at_the_cap_is_printed_compared_and_stored() {
    let h = Harness::sqlite(ExecutorConfig::default()).await;
    h.deploy(
        "cap",
        r#"let deep = 1; for i in 0..100 { deep = [deep]; }
           kv::set("deep", deep);
           #{ eq: deep == deep, text: `${deep}`.len(), json: json::stringify(deep).len() }"#,
    )
    .await;
    let run = h.get("cap").await;
    let out: serde_json::Value = serde_json::from_str(&body(&run)).unwrap();
    assert_eq!(
        out,
        serde_json::json!({ "eq": true, "text": 201, "json": 201 })
    );
    assert_eq!(run.effects.kv.len(), 1, "the value at the cap is written");
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pure_script_is_answered_inline_without_a_script_thread() {
    let h = Harness::sqlite(one_thread(Limits::default())).await;
    h.deploy("hello", r#"print("hi"); "hello world""#).await;
    h.deploy("echo", r#"#{ path: request.path, at: time::now_ms() > 0 }"#)
        .await;
    let hello = h.get("hello").await;
    assert_eq!(body(&hello), "hello world");
    assert_eq!(hello.version, 1);
    assert_eq!(hello.logs.len(), 1);
    assert_eq!(hello.logs[0].message, "hi");
    let req = HttpRequest {
        path: "/x".into(),
        ..HttpRequest::default()
    };
    let echo = h.call("echo", req).await.unwrap();
    assert_eq!(body(&echo), r#"{"at":true,"path":"/x"}"#);
    assert_eq!(h.executor.inline_runs(), 2);
    // A script error is answered inline too, as a script thread would answer it.
    h.deploy("fails", r#"throw "boom""#).await;
    let failed = h.get("fails").await.result.unwrap_err();
    assert_eq!(failed.kind, FailureKind::Error);
    assert!(failed.message.contains("boom"), "{}", failed.message);
    assert_eq!(h.executor.inline_runs(), 3);
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_looping_script_leaves_its_inline_try_and_its_limits_stop_it_without_stalling_others() {
    let limits = Limits {
        max_operations: u64::MAX,
        timeout: Duration::from_millis(1000),
        ..Limits::default()
    };
    let h = Arc::new(Harness::sqlite(one_thread(limits)).await);
    h.deploy("spin", "let n = 0; loop { n += 1 }").await;
    h.deploy("hello", r#""hi""#).await;
    let spinning = {
        let h = Arc::clone(&h);
        tokio::spawn(async move { h.get("spin").await })
    };
    tokio::task::yield_now().await;
    // One runtime worker: a try that held it would hold this request too.
    let started = Instant::now();
    assert_eq!(body(&h.get("hello").await), "hi");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        !spinning.is_finished(),
        "the loop runs on its script thread"
    );
    let spun = spinning.await.unwrap();
    let f = spun.result.unwrap_err();
    assert_eq!(f.kind, FailureKind::Timeout);
    assert_eq!(f.message, "wall-clock limit of 1s exceeded");
    assert!(spun.duration >= Duration::from_millis(1000));
    assert_eq!(h.executor.inline_runs(), 1, "only hello");
    let Ok(h) = Arc::try_unwrap(h) else {
        panic!("the harness is still shared")
    };
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_whose_kv_read_stops_its_inline_try_runs_once_on_a_script_thread() {
    let h = Harness::sqlite(one_thread(Limits::default())).await;
    // Written `kv :: get`, the call gets past the source check (`kv::get`), so it is the
    // call itself that stops the inline try, after the try buffered a write and an event.
    h.deploy(
        "count",
        r#"print("before"); kv :: set("k", 1); queue :: send("q", 1); kv :: get("k");
           log::info("after"); "done""#,
    )
    .await;
    for _ in 0..2 {
        let run = h.get("count").await;
        assert_eq!(body(&run), "done");
        let logs: Vec<&str> = run.logs.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(
            logs,
            ["before", "after"],
            "the discarded try's line is gone"
        );
        assert_eq!(run.effects.kv.len(), 1, "one write, buffered once");
        assert_eq!(run.effects.emitted.len(), 1, "one event, buffered once");
    }
    // A call caught by the script stops the try all the same.
    h.deploy(
        "caught",
        r#"let v = "none"; try { v = kv :: get("missing") } catch { v = "caught" } type_of(v)"#,
    )
    .await;
    assert_eq!(
        body(&h.get("caught").await),
        "()",
        "read on the script thread"
    );
    assert_eq!(h.executor.inline_runs(), 0);
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_that_only_buffers_writes_and_events_is_answered_inline_with_its_effects() {
    let h = Harness::sqlite(one_thread(Limits::default())).await;
    h.deploy(
        "put",
        r#"kv::set("last", 1); kv::set("gone", 2, #{ ttl: 60 }); kv::delete("gone");
           pubsub::publish("news", #{ n: 1 }); queue::send("jobs", 2); "ok""#,
    )
    .await;
    for _ in 0..3 {
        let run = h.get("put").await;
        assert_eq!(body(&run), "ok");
        assert_eq!(
            run.effects.kv,
            [
                shared::KvWrite::Set {
                    key: "last".into(),
                    value: serde_json::json!(1),
                    ttl: None,
                },
                shared::KvWrite::Delete { key: "gone".into() },
            ]
        );
        assert_eq!(run.effects.emitted.len(), 2);
    }
    assert_eq!(h.executor.inline_runs(), 3);
    // A script error answered inline drops what the run buffered, as a script thread does.
    h.deploy("fails", r#"kv::set("k", 1); throw "boom""#).await;
    let failed = h.get("fails").await;
    assert_eq!(failed.result.unwrap_err().kind, FailureKind::Error);
    assert!(failed.effects.is_empty());
    assert_eq!(h.executor.inline_runs(), 4);
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_write_meets_the_same_limits_as_on_a_script_thread() {
    let limits = Limits {
        max_kv_value_bytes: 16,
        max_effects_per_run: 2,
        max_payload_bytes: 16,
        ..Limits::default()
    };
    let h = Harness::sqlite(one_thread(limits)).await;
    // Each pair: the same calls inline, and behind a `sleep(0)` (never tried inline).
    for (i, source) in [
        r#"kv::set("k", "0123456789abcdefghij"); "ok""#,
        r#"for i in 0..3 { kv::set(`k${i}`, i) } "ok""#,
        r#"queue::send("q", "0123456789abcdefghij"); "ok""#,
        r#"kv::set("", 1); "ok""#,
    ]
    .into_iter()
    .enumerate()
    {
        let before = h.executor.inline_runs();
        h.deploy(&format!("inline{i}"), source).await;
        h.deploy(&format!("thread{i}"), &format!("sleep(0); {source}"))
            .await;
        let inline = h.get(&format!("inline{i}")).await;
        assert_eq!(h.executor.inline_runs(), before + 1, "{source}");
        let thread = h.get(&format!("thread{i}")).await;
        assert_eq!(h.executor.inline_runs(), before + 1, "{source}");
        let (a, b) = (inline.result.unwrap_err(), thread.result.unwrap_err());
        assert_eq!(a.kind, FailureKind::Error, "{source}");
        assert_eq!((a.kind, &a.message), (b.kind, &b.message), "{source}");
        assert!(inline.effects.is_empty() && thread.effects.is_empty());
    }
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_write_goes_to_the_app_of_its_invocation() {
    let h = Harness::sqlite(one_thread(Limits::default())).await;
    let other = AppName::parse("other").unwrap();
    h.store().apps.create(&other).await.unwrap();
    let name = ScriptName::parse("put").unwrap();
    for (app, value) in [(&h.app, "shop"), (&other, "other")] {
        h.store()
            .scripts
            .deploy(app, &name, &format!(r#"kv::set("who", "{value}"); "ok""#))
            .await
            .unwrap();
        h.executor
            .catalog_changed(&CatalogChange::Script {
                app: app.clone(),
                script: name.clone(),
            })
            .await;
    }
    for (app, value) in [(&h.app, "shop"), (&other, "other"), (&h.app, "shop")] {
        let run = h
            .executor
            .execute(Invocation {
                id: InvocationId::new(),
                app: app.clone(),
                script: name.clone(),
                input: InvocationInput::Http(HttpRequest::default()),
                request_id: None,
                limits: Default::default(),
            })
            .await
            .unwrap();
        assert_eq!(
            run.effects.kv,
            [shared::KvWrite::Set {
                key: "who".into(),
                value: serde_json::json!(value),
                ttl: None,
            }]
        );
    }
    assert_eq!(h.executor.inline_runs(), 3);
    h.close().await;
}
