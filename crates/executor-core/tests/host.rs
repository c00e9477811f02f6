//! The script-side host API for data and events against a real store (SQLite in a
//! temporary directory, and PostgreSQL): kv, blob, messaging, invoke, modules, config,
//! secrets and email.
//!
//! A run's writes only reach the database once its effects are committed, which is the
//! orchestrator's job; these tests assert on `Execution.effects` and commit them with
//! `store.outbox.apply` when a later run must read them back.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use executor_core::{Executor, ExecutorConfig, Limits};
use serde_json::{Value, json};
use shared::store::ObjectStore;
use shared::{
    AppName, BlobWrite, CatalogChange, CatalogListener, ChannelName, EmailMessage, Emit, Event,
    EventId, EventKind, Execution, ExecutorClient, FailureKind, HttpRequest, Invocation,
    InvocationId, InvocationInput, KvWrite, ScriptName, Store, StoreError,
};
use storage::testing::TestDb;
use testkit::{Backend, on_both_backends};

/// The real object store, with a record of what was put and deleted through it.
struct Recording {
    inner: Arc<dyn ObjectStore>,
    puts: Mutex<Vec<String>>,
    /// Notified after every put.
    put_done: tokio::sync::Notify,
}

#[async_trait]
impl ObjectStore for Recording {
    async fn put(&self, app: &AppName, data: Bytes) -> Result<String, StoreError> {
        let key = self.inner.put(app, data).await?;
        self.puts.lock().unwrap().push(key.clone());
        self.put_done.notify_one();
        Ok(key)
    }
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.inner.get(key).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
    async fn sweep(&self) -> Result<shared::store::Swept, StoreError> {
        self.inner.sweep().await
    }
}

struct Harness {
    db: TestDb,
    store: Store,
    objects: Arc<Recording>,
    executor: Arc<Executor>,
    app: AppName,
}

impl Harness {
    async fn on(db: TestDb, limits: Limits) -> Harness {
        let app = AppName::parse("shop").unwrap();
        db.store.apps.create(&app).await.unwrap();
        let objects = Arc::new(Recording {
            inner: Arc::clone(&db.store.objects),
            puts: Mutex::new(Vec::new()),
            put_done: tokio::sync::Notify::new(),
        });
        let mut store = db.store.clone();
        store.objects = objects.clone();
        let config = ExecutorConfig {
            threads: 1,
            queue_capacity: 8,
            limits,
            email_senders: vec!["Shop@Example.com".into()],
            ..ExecutorConfig::default()
        };
        let executor = Executor::start(config, store.clone(), tokio::runtime::Handle::current());
        Harness {
            db,
            store,
            objects,
            executor,
            app,
        }
    }

    async fn deploy(&self, script: &str, source: &str) {
        let name = ScriptName::parse(script).unwrap();
        self.store
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

    async fn execute(&self, script: &str, input: InvocationInput) -> Execution {
        self.executor
            .execute(Invocation {
                id: InvocationId::new(),
                app: self.app.clone(),
                script: ScriptName::parse(script).unwrap(),
                input,
                request_id: None,
                limits: Default::default(),
            })
            .await
            .expect("the executor runs the script")
    }

    /// Deploy `source` as `main` and run it once over HTTP.
    async fn run(&self, source: &str) -> Execution {
        self.deploy("main", source).await;
        self.execute("main", InvocationInput::Http(HttpRequest::default()))
            .await
    }

    async fn commit(&self, e: &Execution) {
        self.store
            .outbox
            .apply(&self.app, &e.effects)
            .await
            .unwrap();
    }

    async fn close(self) {
        self.executor.shutdown();
        self.db.close().await;
    }
}

fn json_of(e: &Execution) -> Value {
    let out = match &e.result {
        Ok(out) => out,
        Err(f) => panic!("the script failed: {}", f.message),
    };
    serde_json::from_slice(&out.body).unwrap()
}

fn failure(e: &Execution) -> String {
    let f = e.result.as_ref().expect_err("the script should fail");
    assert_eq!(f.kind, FailureKind::Error, "{}", f.message);
    f.message.clone()
}

/// No backend detail in a message a script or its owner sees.
fn assert_no_internals(message: &str) {
    for leak in [
        "SELECT",
        "sqlite",
        "postgres",
        "/tmp",
        "127.0.0.1",
        "StoreError",
    ] {
        assert!(!message.contains(leak), "{leak} leaked: {message}");
    }
}

async fn kv_reads_see_the_runs_own_writes_and_commit_as_effects(h: Harness) {
    let e = h
        .run(
            r#"kv::set("a", #{ n: 1 }); let seen = kv::get("a");
            kv::incr("count"); let c = kv::incr("count", 5);
            kv::set("tmp", "x", #{ ttl: 60 }); kv::delete("a");
            #{ seen: seen, after_delete: kv::get("a"), count: c, keys: kv::list("").keys }"#,
        )
        .await;
    assert_eq!(
        json_of(&e),
        json!({"seen": {"n": 1}, "after_delete": null, "count": 6, "keys": ["count", "tmp"]})
    );
    // A write supersedes the run's earlier writes of its key; increments add up.
    assert_eq!(
        e.effects.kv,
        [
            KvWrite::Incr {
                key: "count".into(),
                by: 6
            },
            KvWrite::Set {
                key: "tmp".into(),
                value: json!("x"),
                ttl: Some(Duration::from_secs(60))
            },
            KvWrite::Delete { key: "a".into() },
        ]
    );
    h.commit(&e).await;
    let e = h
        .run(r#"#{ count: kv::get("count"), next: kv::incr("count", 10), missing: kv::get("a") }"#)
        .await;
    assert_eq!(
        json_of(&e),
        json!({"count": 6, "next": 16, "missing": null})
    );
    h.close().await;
}

async fn a_kv_read_that_meets_a_database_error_fails_the_run_and_the_thread_reads_on(h: Harness) {
    let e = h.run(r#"kv::set("n", 41)"#).await;
    h.commit(&e).await;
    // The reading thread's connection is open and its statement prepared.
    assert_eq!(json_of(&h.run(r#"kv::get("n")"#).await), json!(41));
    h.db.db.execute("ALTER TABLE kv RENAME TO kv_away").await;
    for source in [r#"kv::incr("n")"#, r#"kv::get("n")"#] {
        let message = failure(&h.run(source).await);
        assert!(message.contains("kv::"), "{message}");
        assert_no_internals(&message);
    }
    h.db.db.execute("ALTER TABLE kv_away RENAME TO kv").await;
    // One script thread: the same thread reads again, on a connection that works.
    assert_eq!(json_of(&h.run(r#"kv::incr("n")"#).await), json!(42));
    h.close().await;
}

async fn kv_list_pages_with_a_cursor_over_stored_and_buffered_keys(h: Harness) {
    let e = h
        .run(r#"for k in ["k1", "k2", "k3", "k4", "k5", "other"] { kv::set(k, 1); } ()"#)
        .await;
    h.commit(&e).await;
    let e = h
        .run(
            r#"kv::delete("k2"); kv::set("k6", 1); kv::set("k0", 1);
            let all = []; let pages = 0; let cursor = ();
            loop {
                let page = kv::list("k", #{ limit: 2, cursor: cursor });
                all += page.keys; pages += 1;
                if page.cursor == () || pages > 10 { break; }
                cursor = page.cursor;
            }
            all"#,
        )
        .await;
    assert_eq!(json_of(&e), json!(["k0", "k1", "k3", "k4", "k5", "k6"]));
    h.close().await;
}

async fn blobs_read_back_within_the_run_and_after_commit(h: Harness) {
    let e = h
        .run(
            r#"blob::put("docs/a.txt", "hello", "text/plain");
            let bin = blob(2, 0xff); blob::put("docs/bin", bin); blob::put("empty", "");
            let a = blob::get("docs/a.txt"); let b = blob::get("docs/bin");
            let listed = blob::list("docs/").blobs.map(|b| `${b.name}:${b.size}`);
            blob::delete("empty");
            #{ a: a.data, a_size: a.size, a_type: a.content_type, b_data: b.data, b_len: b.bytes.len(),
               listed: listed, empty: blob::get("empty") }"#,
        )
        .await;
    assert_eq!(
        json_of(&e),
        json!({"a": "hello", "a_size": 5, "a_type": "text/plain", "b_data": null, "b_len": 2,
            "listed": ["docs/a.txt:5", "docs/bin:2"], "empty": null})
    );
    let names: Vec<(&str, u64)> = e
        .effects
        .blobs
        .iter()
        .filter_map(|w| match w {
            BlobWrite::Put { name, size, .. } => Some((name.as_str(), *size)),
            BlobWrite::Delete { .. } => None,
        })
        .collect();
    // The delete of "empty" superseded its put (whose object is deleted at once).
    assert_eq!(names, [("docs/a.txt", 5), ("docs/bin", 2)]);
    let objects = h.objects.puts.lock().unwrap().clone();
    assert_eq!(objects.len(), 3);
    let gone = h.db.store.objects.get(&objects[2]).await.unwrap_err();
    assert!(matches!(gone, StoreError::NotFound(_)), "{gone:?}");
    h.commit(&e).await;
    let e = h
        .run(r#"let a = blob::get("docs/a.txt"); #{ a: a.data, ct: a.content_type, gone: blob::get("empty") }"#)
        .await;
    assert_eq!(
        json_of(&e),
        json!({"a": "hello", "ct": "text/plain", "gone": null})
    );
    h.close().await;
}

async fn a_throwing_run_has_no_effects_and_its_blob_objects_are_deleted(h: Harness) {
    let e = h
        .run(
            r#"kv::set("x", 1); blob::put("f", "data"); pubsub::publish("t", 1);
            throw "boom";"#,
        )
        .await;
    assert!(failure(&e).contains("boom"));
    assert!(e.effects.is_empty(), "{:?}", e.effects);
    let puts = h.objects.puts.lock().unwrap().clone();
    assert_eq!(puts.len(), 1);
    let gone = h.store.objects.get(&puts[0]).await;
    assert!(
        matches!(gone, Err(StoreError::NotFound(_))),
        "the object of a failed run is deleted: {gone:?}"
    );
    h.close().await;
}

async fn bad_keys_and_blob_names_are_script_errors(h: Harness) {
    let e = h
        .run(
            r#"let long = ""; long.pad(513, "k"); let longer = ""; longer.pad(1025, "b");
            let errs = [];
            for k in ["", "a\x00b", "line\nbreak", long] {
                try { kv::set(k, 1); errs.push("accepted"); } catch (e) { errs.push(e); }
            }
            for n in ["", "a\x00b", longer] {
                try { blob::put(n, "x"); errs.push("accepted"); } catch (e) { errs.push(e); }
            }
            try { kv::get("../../etc/passwd"); errs.push("a name is only data"); } catch (e) { errs.push(e); }
            errs"#,
        )
        .await;
    assert_eq!(
        json_of(&e),
        json!([
            "kv::set: key may not be empty",
            "kv::set: key may not contain control characters",
            "kv::set: key may not contain control characters",
            "kv::set: key is longer than 512 bytes",
            "blob::put: blob name may not be empty",
            "blob::put: blob name may not contain control characters",
            "blob::put: blob name is longer than 1024 bytes",
            "a name is only data",
        ])
    );
    assert!(h.objects.puts.lock().unwrap().is_empty());
    h.close().await;
}

async fn values_blobs_and_payloads_over_their_limits_are_script_errors(h: Harness) {
    let e = h
        .run(
            r#"let big = ""; big.pad(200, "x");
            let errs = [];
            try { kv::set("k", big); } catch (e) { errs.push(e); }
            try { blob::put("b", big); } catch (e) { errs.push(e); }
            try { pubsub::publish("t", big); } catch (e) { errs.push(e); }
            try { queue::send("q", #{ big: big }); } catch (e) { errs.push(e); }
            try { invoke("main", big); } catch (e) { errs.push(e); }
            errs"#,
        )
        .await;
    assert_eq!(
        json_of(&e),
        json!([
            "kv::set: value is larger than 100 bytes",
            "blob::put: data is larger than 50 bytes",
            "pubsub::publish: payload is larger than 150 bytes",
            "queue::send: payload is larger than 150 bytes",
            "invoke: payload is larger than 150 bytes",
        ])
    );
    assert!(e.effects.is_empty());
    h.close().await;
}

async fn publish_send_and_invoke_async_emit_events(h: Harness) {
    h.deploy("worker", "event.payload").await;
    let e = h
        .run(
            r#"pubsub::publish("orders.created", #{ id: 7 });
            queue::send("mail", "hi");
            queue::send("mail", "later", #{ delay: 30, idempotency_key: "order-7" });
            invoke_async("worker", [1, 2]);
            let errs = [];
            try { pubsub::publish("bad topic", 1); } catch (e) { errs.push(e); }
            try { invoke_async("nope", 1); } catch (e) { errs.push(e); }
            try { queue::send("q", 1, #{ dealy: 1 }); } catch (e) { errs.push(e); }
            errs"#,
        )
        .await;
    let errs = json_of(&e);
    assert!(
        errs[0]
            .as_str()
            .unwrap()
            .starts_with("pubsub::publish: topic and queue names")
    );
    assert_eq!(errs[1], "invoke_async: script 'nope' does not exist");
    assert_eq!(
        errs[2],
        "queue::send: unknown option 'dealy' (known: delay, idempotency_key)"
    );
    let channel = |n: &str| ChannelName::parse(n).unwrap();
    assert_eq!(
        e.effects.emitted,
        [
            Emit::Publish {
                topic: channel("orders.created"),
                payload: json!({"id": 7})
            },
            Emit::Send {
                queue: channel("mail"),
                payload: json!("hi"),
                delay: None,
                idempotency_key: None
            },
            Emit::Send {
                queue: channel("mail"),
                payload: json!("later"),
                delay: Some(Duration::from_secs(30)),
                idempotency_key: Some("order-7".into())
            },
            Emit::InvokeAsync {
                script: ScriptName::parse("worker").unwrap(),
                payload: json!([1, 2])
            },
        ]
    );
    h.close().await;
}

async fn invoke_returns_the_callees_value_and_merges_its_effects(h: Harness) {
    h.deploy(
        "double",
        r#"kv::set("seen", event.payload.n);
        #{ n: event.payload.n * 2, kind: event.kind, attempt: event.attempt }"#,
    )
    .await;
    h.deploy(
        "fails",
        r#"kv::set("never", 1); pubsub::publish("t", 1); throw "callee boom";"#,
    )
    .await;
    let e = h
        .run(
            r#"let r = invoke("double", #{ n: 21 });
            let caught = "not thrown";
            try { invoke("fails", ()); } catch (e) { caught = e; }
            #{ r: r, caught: caught, seen: kv::get("seen"), never: kv::get("never") }"#,
        )
        .await;
    assert_eq!(
        json_of(&e),
        json!({"r": {"n": 42, "kind": "invoke", "attempt": 1}, "caught": "callee boom",
            "seen": 21, "never": null})
    );
    assert_eq!(
        e.effects.kv,
        [KvWrite::Set {
            key: "seen".into(),
            value: json!(21),
            ttl: None
        }]
    );
    assert!(
        e.effects.emitted.is_empty(),
        "the failed callee emits nothing"
    );

    let e = h.run(r#"invoke("fails", ())"#).await;
    let message = failure(&e);
    assert!(message.contains("callee boom"), "{message}");
    assert!(message.contains("invoke(fails)"), "{message}");
    h.close().await;
}

async fn invoke_recursion_stops_at_the_depth_limit_with_a_clear_error(h: Harness) {
    h.deploy("rec", r#"invoke("rec", ())"#).await;
    let e = h
        .execute("rec", InvocationInput::Http(HttpRequest::default()))
        .await;
    let message = failure(&e);
    assert!(
        message.contains("invoke depth limit of 8 exceeded"),
        "{message}"
    );
    h.close().await;
}

async fn imports_resolve_the_apps_own_scripts_and_are_cached(h: Harness) {
    h.deploy(
        "helpers",
        r#"print("loading helpers"); fn double(x) { x * 2 } export const NAME = "v1";"#,
    )
    .await;
    let main = r#"import "helpers" as h; #{ d: h::double(21), name: h::NAME }"#;
    let first = h.run(main).await;
    assert_eq!(json_of(&first), json!({"d": 42, "name": "v1"}));
    assert!(first.logs.iter().any(|l| l.message == "loading helpers"));
    let second = h
        .execute("main", InvocationInput::Http(HttpRequest::default()))
        .await;
    assert_eq!(json_of(&second), json!({"d": 42, "name": "v1"}));
    assert!(second.logs.is_empty(), "the module is evaluated once");

    h.deploy(
        "helpers",
        r#"fn double(x) { x * 3 } export const NAME = "v2";"#,
    )
    .await;
    let third = h
        .execute("main", InvocationInput::Http(HttpRequest::default()))
        .await;
    assert_eq!(json_of(&third), json!({"d": 63, "name": "v2"}));
    h.close().await;
}

async fn missing_broken_throwing_and_cyclic_modules_give_clear_messages(h: Harness) {
    let e = h.run(r#"import "nope" as n; 1"#).await;
    let message = failure(&e);
    assert!(message.contains("module 'nope' not found"), "{message}");
    assert_no_internals(&message);

    h.deploy("broken", "let x = ;").await;
    let e = h.run(r#"import "broken" as b; 1"#).await;
    let message = failure(&e);
    assert!(
        message.contains("module 'broken' failed: line 1, column"),
        "{message}"
    );
    assert_no_internals(&message);

    h.deploy("thrower", r#"throw "cannot start";"#).await;
    let e = h.run(r#"import "thrower" as t; 1"#).await;
    let message = failure(&e);
    assert!(message.contains("module 'thrower' failed"), "{message}");
    assert!(message.contains("cannot start"), "{message}");

    h.deploy("b", r#"import "a" as a; 1"#).await;
    h.deploy("a", r#"import "b" as b; 1"#).await;
    let e = h
        .execute("a", InvocationInput::Http(HttpRequest::default()))
        .await;
    let message = failure(&e);
    assert!(message.contains("import cycle: a -> b -> a"), "{message}");
    assert_no_internals(&message);
    h.close().await;
}

async fn config_and_secrets_read_back_what_the_store_holds(h: Harness) {
    h.store
        .settings
        .config_set(&h.app, "greeting", &json!({"text": "hi", "n": 2}))
        .await
        .unwrap();
    h.store
        .settings
        .secret_set(&h.app, "api_key", "s3cret")
        .await
        .unwrap();
    let e = h
        .run(
            r#"#{ text: config::get("greeting").text, n: config::get("greeting").n,
               key: secrets::get("api_key"), no_config: config::get("nope"),
               no_secret: secrets::get("nope") }"#,
        )
        .await;
    assert_eq!(
        json_of(&e),
        json!({"text": "hi", "n": 2, "key": "s3cret", "no_config": null, "no_secret": null})
    );
    assert!(e.logs.is_empty());
    h.close().await;
}

async fn email_send_validates_and_buffers_the_message(h: Harness) {
    let e = h
        .run(
            r#"email::send(#{ to: ["ada@example.com", "bob@example.org"], subject: "Hi",
                text: "hello", from: "shop@example.com" });
            let errs = [];
            let tries = [
                #{ to: "not an address", subject: "s", text: "t" },
                #{ to: "ada@example.com", text: "t" },
                #{ to: "ada@example.com", subject: "s" },
                #{ to: [], subject: "s", text: "t" },
                #{ to: "ada@example.com", subject: "s", text: "t", reply_to: "x@" },
                #{ to: "ada@example.com", subject: "a\r\nBcc: eve@example.com", text: "t" },
                #{ to: "ada@example.com", subject: "s", text: "t", from: "ceo@example.com" },
            ];
            for m in tries { try { email::send(m); errs.push("accepted"); } catch (e) { errs.push(e); } }
            errs"#,
        )
        .await;
    assert_eq!(
        json_of(&e),
        json!([
            "invalid email address: not an address",
            "email::send: subject is required",
            "email::send: text or html is required",
            "email::send: to must have 1 to 50 addresses",
            "invalid email address: x@",
            "email::send: subject may not contain control characters",
            "email::send: from 'ceo@example.com' is not an allowed sender; leave it out to send from the default sender",
        ])
    );
    assert_eq!(
        e.effects.emitted,
        [Emit::Email {
            message: EmailMessage {
                to: vec!["ada@example.com".into(), "bob@example.org".into()],
                subject: "Hi".into(),
                text: Some("hello".into()),
                html: None,
                from: Some("shop@example.com".into()),
                reply_to: None,
            }
        }]
    );
    h.close().await;
}

async fn an_event_input_is_seen_as_the_event_map(h: Harness) {
    h.deploy(
        "consumer",
        r#"#{ kind: event.kind, queue: event.queue, payload: event.payload, attempt: event.attempt,
           max: event.max_attempts, id_len: event.id.len(), at: event.scheduled_at.len() > 20 }"#,
    )
    .await;
    let now = Utc::now();
    let event = Event {
        id: EventId::new(),
        app: h.app.clone(),
        kind: EventKind::Queue,
        script: Some(ScriptName::parse("consumer").unwrap()),
        trigger: None,
        source: Some("orders".into()),
        payload: json!({"id": 7}),
        attempt: 2,
        max_attempts: 5,
        scheduled_at: now,
        created_at: now,
        lease: None,
        trace: None,
    };
    let e = h.execute("consumer", InvocationInput::Event(event)).await;
    assert_eq!(
        json_of(&e),
        json!({"kind": "queue", "queue": "orders", "payload": {"id": 7}, "attempt": 2,
            "max": 5, "id_len": 36, "at": true})
    );
    h.close().await;
}

fn small_limits() -> Limits {
    Limits {
        max_kv_value_bytes: 100,
        max_blob_bytes: 50,
        max_payload_bytes: 150,
        ..Limits::default()
    }
}

/// Run `test` on a harness with [`small_limits`] on a fresh database on `backend`.
async fn with_small_limits(backend: Backend, test: impl AsyncFnOnce(Harness)) {
    test(Harness::on(TestDb::new(backend).await, small_limits()).await).await;
}

on_both_backends!(with_small_limits =>
    kv_reads_see_the_runs_own_writes_and_commit_as_effects,
    kv_list_pages_with_a_cursor_over_stored_and_buffered_keys,
    a_kv_read_that_meets_a_database_error_fails_the_run_and_the_thread_reads_on,
    blobs_read_back_within_the_run_and_after_commit,
    a_throwing_run_has_no_effects_and_its_blob_objects_are_deleted,
    bad_keys_and_blob_names_are_script_errors,
    values_blobs_and_payloads_over_their_limits_are_script_errors,
    publish_send_and_invoke_async_emit_events,
    invoke_returns_the_callees_value_and_merges_its_effects,
    invoke_recursion_stops_at_the_depth_limit_with_a_clear_error,
    imports_resolve_the_apps_own_scripts_and_are_cached,
    missing_broken_throwing_and_cyclic_modules_give_clear_messages,
    config_and_secrets_read_back_what_the_store_holds,
    email_send_validates_and_buffers_the_message,
    an_event_input_is_seen_as_the_event_map,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoked_script_spends_its_callers_budget_and_cannot_escape_it() {
    let limits = Limits {
        max_operations: 50_000,
        ..Limits::default()
    };
    let h = Harness::on(storage::testing::sqlite_store().await, limits).await;
    h.deploy("spin", "let i = 0; loop { i += 1; }").await;
    let e = h
        .run(r#"try { invoke("spin", ()); } catch (e) { "escaped" }"#)
        .await;
    let f = e.result.as_ref().expect_err("the limit ends the whole run");
    assert_eq!(f.kind, FailureKind::LimitExceeded, "{}", f.message);
    assert_eq!(f.message, "operation limit exceeded");
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_calls_in_a_bare_sandbox_fail_instead_of_writing_anywhere() {
    let out = std::thread::Builder::new()
        .stack_size(16 * 1024 * 1024)
        .spawn(|| {
            let sandbox = executor_core::Sandbox::new(&Limits::default());
            let ast = sandbox.compile(r#"kv::set("k", 1)"#).unwrap();
            sandbox.run(&ast, &InvocationInput::Http(HttpRequest::default()))
        })
        .unwrap()
        .join()
        .unwrap();
    let f = out.result.expect_err("no run context, no store");
    assert!(
        f.message.contains("kv::set is not available here"),
        "{}",
        f.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_caller_gave_up_leaves_no_blob_object_behind() {
    let h = Harness::on(storage::testing::sqlite_store().await, Limits::default()).await;
    h.deploy("slow", r#"blob::put("a", "x"); sleep(0.5); "done""#)
        .await;
    // `next` names `sleep`, so it is never tried inline: it waits for the script thread.
    h.deploy("next", r#"sleep(0); "next""#).await;
    let (executor, app) = (Arc::clone(&h.executor), h.app.clone());
    let caller = tokio::spawn(async move {
        executor
            .execute(Invocation {
                id: InvocationId::new(),
                app,
                script: ScriptName::parse("slow").unwrap(),
                input: InvocationInput::Http(HttpRequest::default()),
                request_id: None,
                limits: Default::default(),
            })
            .await
    });
    // The object is written; the caller gives up while the run sleeps (the lane or the
    // dispatcher does this at its deadline), so nobody will commit the run's effects.
    h.objects.put_done.notified().await;
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    // One script thread: the next run starts once the abandoned one ended and cleaned up.
    let e = h
        .execute("next", InvocationInput::Http(HttpRequest::default()))
        .await;
    assert!(e.result.is_ok());
    let objects = h.objects.puts.lock().unwrap().clone();
    assert_eq!(objects.len(), 1);
    let gone = h.db.store.objects.get(&objects[0]).await.unwrap_err();
    assert!(matches!(gone, StoreError::NotFound(_)), "{gone:?}");
    h.close().await;
}
