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

// ---------------------------------------------------------------------------------------
// Triggers

async fn event_triggers_of_every_kind_are_created_and_listed(t: &TestApp) {
    t.app_with_script("shop").await;
    t.changes();
    let cron = t
        .add_trigger(
            "shop",
            json!({"kind": "cron", "script": "handler", "schedule": "0 9 * * MON-FRI", "timezone": "Europe/Berlin"}),
        )
        .await;
    assert_eq!(cron.status, StatusCode::CREATED, "{}", cron.body);
    assert_eq!(cron.body["kind"], "cron");
    assert_eq!(cron.body["schedule"], "0 9 * * MON-FRI");
    assert_eq!(cron.body["timezone"], "Europe/Berlin");
    assert_eq!(cron.body["max_attempts"], 5);
    let utc_default = t
        .add_trigger(
            "shop",
            json!({"kind": "cron", "script": "handler", "schedule": "*/10 * * * * *"}),
        )
        .await;
    assert_eq!(
        utc_default.status,
        StatusCode::CREATED,
        "{}",
        utc_default.body
    );
    assert_eq!(utc_default.body["timezone"], "UTC");
    let topic = t
        .add_trigger("shop", json!({"kind": "topic", "script": "handler", "topic": "orders.created", "max_attempts": 2}))
        .await;
    assert_eq!(topic.status, StatusCode::CREATED, "{}", topic.body);
    assert_eq!(topic.body["topic"], "orders.created");
    assert_eq!(topic.body["max_attempts"], 2);
    let queue = t
        .add_trigger(
            "shop",
            json!({"kind": "queue", "script": "handler", "queue": "emails"}),
        )
        .await;
    assert_eq!(queue.status, StatusCode::CREATED, "{}", queue.body);
    let dead = t
        .add_trigger("shop", json!({"kind": "dead_letter", "script": "handler"}))
        .await;
    assert_eq!(dead.status, StatusCode::CREATED, "{}", dead.body);
    assert_eq!(dead.body["kind"], "dead_letter");

    let list = t
        .call(Method::GET, "/api/v1/apps/shop/triggers", None)
        .await;
    let kinds: Vec<&str> = list.body["triggers"]
        .as_array()
        .expect("triggers")
        .iter()
        .filter_map(|tr| tr["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["cron", "cron", "topic", "queue", "dead_letter"]);
    let app = AppName::parse("shop").expect("app");
    assert_eq!(
        t.changes(),
        vec![CatalogChange::Triggers { app: app.clone() }; 5],
        "every creation is published"
    );
}

async fn bad_event_triggers_are_refused_with_the_problem_named(t: &TestApp) {
    t.app_with_script("shop").await;
    let bad_cron = t
        .add_trigger(
            "shop",
            json!({"kind": "cron", "script": "handler", "schedule": "x"}),
        )
        .await;
    assert_error(&bad_cron, 400, "invalid_input");
    assert!(
        message(&bad_cron).starts_with("invalid cron schedule 'x': "),
        "{}",
        message(&bad_cron)
    );
    let seven = t
        .add_trigger(
            "shop",
            json!({"kind": "cron", "script": "handler", "schedule": "0 0 0 1 1 * 2030"}),
        )
        .await;
    assert_error(&seven, 400, "invalid_input");
    let bad_tz = t
        .add_trigger(
            "shop",
            json!({"kind": "cron", "script": "handler", "schedule": "* * * * *", "timezone": "Mars/X"}),
        )
        .await;
    assert_error(&bad_tz, 400, "invalid_input");
    assert_eq!(message(&bad_tz), "unknown time zone 'Mars/X'");
    let no_schedule = t
        .add_trigger("shop", json!({"kind": "cron", "script": "handler"}))
        .await;
    assert_error(&no_schedule, 400, "invalid_input");
    let bad_topic = t
        .add_trigger(
            "shop",
            json!({"kind": "topic", "script": "handler", "topic": "a b"}),
        )
        .await;
    assert_error(&bad_topic, 400, "invalid_input");
    assert!(message(&bad_topic).contains("topic and queue names"));
    let bad_queue = t
        .add_trigger(
            "shop",
            json!({"kind": "queue", "script": "handler", "queue": ""}),
        )
        .await;
    assert_error(&bad_queue, 400, "invalid_input");
    let foreign = t
        .add_trigger(
            "shop",
            json!({"kind": "topic", "script": "handler", "topic": "t", "method": "GET"}),
        )
        .await;
    assert_error(&foreign, 400, "invalid_input");
    assert_eq!(
        message(&foreign),
        "field 'method' does not apply to a topic trigger"
    );
    let attempts = t
        .add_trigger(
            "shop",
            json!({"kind": "dead_letter", "script": "handler", "max_attempts": 101}),
        )
        .await;
    assert_error(&attempts, 400, "invalid_input");
    let missing_script = t
        .add_trigger(
            "shop",
            json!({"kind": "topic", "script": "nope", "topic": "t"}),
        )
        .await;
    assert_error(&missing_script, 404, "not_found");
    assert_eq!(message(&missing_script), "script 'nope' does not exist");
    let missing_app = t
        .add_trigger(
            "nowhere",
            json!({"kind": "dead_letter", "script": "handler"}),
        )
        .await;
    assert_error(&missing_app, 404, "not_found");
    let list = t
        .call(Method::GET, "/api/v1/apps/shop/triggers", None)
        .await;
    assert_eq!(list.body["triggers"], json!([]), "nothing was stored");
}

async fn a_second_consumer_for_a_queue_is_a_conflict(t: &TestApp) {
    t.app_with_script("shop").await;
    let body = json!({"kind": "queue", "script": "handler", "queue": "jobs"});
    assert_eq!(
        t.add_trigger("shop", body.clone()).await.status,
        StatusCode::CREATED
    );
    let second = t.add_trigger("shop", body).await;
    assert_error(&second, 409, "conflict");
    assert!(
        message(&second).contains("queue jobs"),
        "{}",
        message(&second)
    );
    // Topics may have many subscribers.
    let topic = json!({"kind": "topic", "script": "handler", "topic": "jobs"});
    assert_eq!(
        t.add_trigger("shop", topic.clone()).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        t.add_trigger("shop", topic).await.status,
        StatusCode::CREATED
    );
}

// ---------------------------------------------------------------------------------------
// Auth

async fn every_new_route_needs_a_token(t: &TestApp) {
    for Route { method, path, .. } in ROUTES {
        if *path == "/api/v1/openapi.json" {
            continue;
        }
        let uri = path
            .replace("{app}", "shop")
            .replace("{name}", "hello")
            .replace("{key}", "k")
            .replace("{version}", "1")
            .replace("{id}", &uuid::Uuid::nil().to_string());
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let answer = t.call_as(None, method.clone(), &uri, None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        let wrong = t
            .call_as(Some("pct_wrong"), method.clone(), &uri, None)
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
}

// ---------------------------------------------------------------------------------------
// Dead letters

async fn dead_letters_are_listed_shown_and_paged_newest_first(t: &TestApp) {
    let app = t.app_with_script("shop").await;
    for n in 0..3 {
        t.dead_letter(&app, json!({"n": n})).await;
    }
    let page = t
        .call(Method::GET, "/api/v1/apps/shop/dead-letters?limit=2", None)
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let first = page.body["dead_letters"].as_array().expect("list").clone();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0]["payload"], json!({"n": 2}), "newest first");
    assert_eq!(first[0]["error"], "boom at line 1");
    assert_eq!(first[0]["kind"], "invoke");
    assert_eq!(first[0]["script"], "handler");
    let next = page.body["next_before"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let rest = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/dead-letters?limit=2&before={next}"),
            None,
        )
        .await;
    assert_eq!(rest.body["dead_letters"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest.body["dead_letters"][0]["payload"], json!({"n": 0}));
    assert_eq!(rest.body["next_before"], Value::Null);

    let id = first[0]["id"].as_str().expect("id");
    let shown = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/dead-letters/{id}"),
            None,
        )
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body["id"], id);
    assert_eq!(shown.body["attempts"], first[0]["attempts"]);

    let bad_limit = t
        .call(Method::GET, "/api/v1/apps/shop/dead-letters?limit=0", None)
        .await;
    assert_error(&bad_limit, 400, "invalid_input");
    let bad_before = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/dead-letters?before=nope",
            None,
        )
        .await;
    assert_error(&bad_before, 400, "invalid_input");
    let missing_app = t
        .call(Method::GET, "/api/v1/apps/nowhere/dead-letters", None)
        .await;
    assert_error(&missing_app, 404, "not_found");
}

async fn replaying_a_dead_letter_puts_the_event_back_and_removes_it(t: &TestApp) {
    let app = t.app_with_script("shop").await;
    t.dead_letter(&app, json!({"order": 7})).await;
    let list = t
        .call(Method::GET, "/api/v1/apps/shop/dead-letters", None)
        .await;
    let id = list.body["dead_letters"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let before = t.store.outbox.pending(&app).await.expect("pending");

    let replayed = t
        .call(
            Method::POST,
            &format!("/api/v1/apps/shop/dead-letters/{id}/replay"),
            None,
        )
        .await;
    assert_eq!(replayed.status, StatusCode::ACCEPTED, "{}", replayed.body);
    assert!(replayed.body["event_id"].is_string());
    assert_eq!(
        t.store.outbox.pending(&app).await.expect("pending"),
        before + 1
    );
    let events = t
        .store
        .outbox
        .claim_due("test-node", 10, Duration::from_secs(60))
        .await
        .expect("claim");
    let event = events
        .iter()
        .find(|e| e.id.to_string() == replayed.body["event_id"].as_str().unwrap_or_default())
        .expect("the replayed event is due");
    assert_eq!(event.payload, json!({"order": 7}));
    assert_eq!(event.attempt, 1);

    let gone = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/dead-letters/{id}"),
            None,
        )
        .await;
    assert_error(&gone, 404, "not_found");
    let again = t
        .call(
            Method::POST,
            &format!("/api/v1/apps/shop/dead-letters/{id}/replay"),
            None,
        )
        .await;
    assert_error(&again, 404, "not_found");
    assert_eq!(
        message(&again),
        format!("dead letter '{id}' does not exist")
    );
}

async fn dead_letters_are_deleted_one_by_one_or_purged(t: &TestApp) {
    let app = t.app_with_script("shop").await;
    let other = t.app_with_script("other").await;
    for n in 0..3 {
        t.dead_letter(&app, json!(n)).await;
    }
    t.dead_letter(&other, json!("keep")).await;
    let list = t
        .call(Method::GET, "/api/v1/apps/shop/dead-letters", None)
        .await;
    let id = list.body["dead_letters"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let deleted = t
        .call(
            Method::DELETE,
            &format!("/api/v1/apps/shop/dead-letters/{id}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let twice = t
        .call(
            Method::DELETE,
            &format!("/api/v1/apps/shop/dead-letters/{id}"),
            None,
        )
        .await;
    assert_error(&twice, 404, "not_found");
    // Another app's id is not found through this app.
    let other_list = t
        .call(Method::GET, "/api/v1/apps/other/dead-letters", None)
        .await;
    let other_id = other_list.body["dead_letters"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let crossed = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/dead-letters/{other_id}"),
            None,
        )
        .await;
    assert_error(&crossed, 404, "not_found");

    let purged = t
        .call(Method::DELETE, "/api/v1/apps/shop/dead-letters", None)
        .await;
    assert_eq!(purged.status, StatusCode::OK);
    assert_eq!(purged.body, json!({"purged": 2}));
    let empty = t
        .call(Method::GET, "/api/v1/apps/shop/dead-letters", None)
        .await;
    assert_eq!(empty.body["dead_letters"], json!([]));
    let kept = t
        .call(Method::GET, "/api/v1/apps/other/dead-letters", None)
        .await;
    assert_eq!(kept.body["dead_letters"].as_array().map(Vec::len), Some(1));
    let unknown = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/dead-letters/{}", uuid::Uuid::nil()),
            None,
        )
        .await;
    assert_error(&unknown, 404, "not_found");
    let malformed = t
        .call(Method::GET, "/api/v1/apps/shop/dead-letters/xyz", None)
        .await;
    assert_error(&malformed, 400, "invalid_input");
}

// ---------------------------------------------------------------------------------------
// Config and secrets

async fn config_values_are_set_read_listed_and_deleted(t: &TestApp) {
    t.app_with_script("shop").await;
    let set = t
        .call(
            Method::PUT,
            "/api/v1/apps/shop/config/limits",
            Some(json!({"value": {"max": 3, "names": ["a"]}})),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    assert_eq!(
        set.body,
        json!({"key": "limits", "value": {"max": 3, "names": ["a"]}})
    );
    t.call(
        Method::PUT,
        "/api/v1/apps/shop/config/greeting",
        Some(json!({"value": "hi"})),
    )
    .await;
    let got = t
        .call(Method::GET, "/api/v1/apps/shop/config/greeting", None)
        .await;
    assert_eq!(got.body, json!({"key": "greeting", "value": "hi"}));
    let all = t.call(Method::GET, "/api/v1/apps/shop/config", None).await;
    assert_eq!(
        all.body,
        json!({"config": {"greeting": "hi", "limits": {"max": 3, "names": ["a"]}}})
    );
    // A key with a slash travels percent-encoded as one segment.
    let slashed = t
        .call(
            Method::PUT,
            "/api/v1/apps/shop/config/a%2Fb",
            Some(json!({"value": 1})),
        )
        .await;
    assert_eq!(slashed.body["key"], "a/b");

    let deleted = t
        .call(Method::DELETE, "/api/v1/apps/shop/config/greeting", None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = t
        .call(Method::GET, "/api/v1/apps/shop/config/greeting", None)
        .await;
    assert_error(&gone, 404, "not_found");
    let twice = t
        .call(Method::DELETE, "/api/v1/apps/shop/config/greeting", None)
        .await;
    assert_error(&twice, 404, "not_found");

    let control = t
        .call(
            Method::PUT,
            "/api/v1/apps/shop/config/a%00b",
            Some(json!({"value": 1})),
        )
        .await;
    assert_error(&control, 400, "invalid_input");
    let long = "k".repeat(257);
    let too_long = t
        .call(
            Method::PUT,
            &format!("/api/v1/apps/shop/config/{long}"),
            Some(json!({"value": 1})),
        )
        .await;
    assert_error(&too_long, 400, "invalid_input");
    let no_value = t
        .call(Method::PUT, "/api/v1/apps/shop/config/x", Some(json!({})))
        .await;
    assert_error(&no_value, 400, "invalid_input");
    let missing_app = t
        .call(
            Method::PUT,
            "/api/v1/apps/nowhere/config/x",
            Some(json!({"value": 1})),
        )
        .await;
    assert_error(&missing_app, 404, "not_found");
}

async fn a_secret_value_never_appears_in_any_answer(t: &TestApp) {
    t.app_with_script("shop").await;
    const VALUE: &str = "hunter2-very-secret-value";
    let mut answers = Vec::new();
    let set = t
        .call(
            Method::PUT,
            "/api/v1/apps/shop/secrets/DB_PASSWORD",
            Some(json!({"value": VALUE})),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    assert_eq!(set.body, json!({"name": "DB_PASSWORD", "set": true}));
    answers.push(set);
    let list = t.call(Method::GET, "/api/v1/apps/shop/secrets", None).await;
    assert_eq!(list.body, json!({"secrets": ["DB_PASSWORD"]}));
    answers.push(list);
    let shown = t
        .call(Method::GET, "/api/v1/apps/shop/secrets/DB_PASSWORD", None)
        .await;
    assert_eq!(shown.body, json!({"name": "DB_PASSWORD", "set": true}));
    answers.push(shown);
    answers.push(t.call(Method::GET, "/api/v1/apps/shop/config", None).await);
    answers.push(t.call(Method::GET, "/api/v1/apps/shop/kv", None).await);
    answers.push(t.call(Method::GET, "/api/v1/apps/shop", None).await);
    // Overwriting answers the same, without the old or the new value.
    answers.push(
        t.call(
            Method::PUT,
            "/api/v1/apps/shop/secrets/DB_PASSWORD",
            Some(json!({"value": VALUE})),
        )
        .await,
    );
    for answer in &answers {
        let text = String::from_utf8_lossy(&answer.bytes);
        assert!(!text.contains(VALUE), "the secret leaked: {text}");
    }
    // Scripts still read the value through the store.
    let stored = t
        .store
        .settings
        .secret_get(&AppName::parse("shop").expect("app"), "DB_PASSWORD")
        .await
        .expect("get");
    assert_eq!(stored.as_deref(), Some(VALUE));

    let unknown = t
        .call(Method::GET, "/api/v1/apps/shop/secrets/NOPE", None)
        .await;
    assert_error(&unknown, 404, "not_found");
    let deleted = t
        .call(
            Method::DELETE,
            "/api/v1/apps/shop/secrets/DB_PASSWORD",
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = t
        .call(Method::GET, "/api/v1/apps/shop/secrets/DB_PASSWORD", None)
        .await;
    assert_error(&gone, 404, "not_found");
    let not_a_string = t
        .call(
            Method::PUT,
            "/api/v1/apps/shop/secrets/X",
            Some(json!({"value": 5})),
        )
        .await;
    assert_error(&not_a_string, 400, "invalid_input");
    let bad_name = t
        .call(
            Method::PUT,
            "/api/v1/apps/shop/secrets/a%0Ab",
            Some(json!({"value": "v"})),
        )
        .await;
    assert_error(&bad_name, 400, "invalid_input");
}

// ---------------------------------------------------------------------------------------
// KV and blobs

async fn kv_entries_are_paged_read_and_deleted(t: &TestApp) {
    let app = t.app_with_script("shop").await;
    let kv = ["users/1", "users/2", "users/3", "zeta"]
        .iter()
        .enumerate()
        .map(|(i, k)| KvWrite::Set {
            key: (*k).to_owned(),
            value: json!({"i": i}),
            ttl: None,
        })
        .collect();
    t.store
        .outbox
        .apply(
            &app,
            &Effects {
                kv,
                ..Effects::default()
            },
        )
        .await
        .expect("apply");

    let page = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/kv?prefix=users%2F&limit=2",
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let keys: Vec<&str> = page.body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["key"].as_str())
        .collect();
    assert_eq!(keys, ["users/1", "users/2"]);
    assert_eq!(page.body["entries"][0]["value"], json!({"i": 0}));
    assert!(page.body["entries"][0]["updated_at"].is_string());
    assert_eq!(page.body["entries"][0]["expires_at"], Value::Null);
    assert_eq!(page.body["next_after"], "users/2");
    let rest = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/kv?prefix=users%2F&limit=2&after=users%2F2",
            None,
        )
        .await;
    assert_eq!(rest.body["entries"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest.body["entries"][0]["key"], "users/3");
    assert_eq!(rest.body["next_after"], Value::Null);
    let all = t.call(Method::GET, "/api/v1/apps/shop/kv", None).await;
    assert_eq!(all.body["entries"].as_array().map(Vec::len), Some(4));

    let got = t
        .call(Method::GET, "/api/v1/apps/shop/kv/users%2F3", None)
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["key"], "users/3");
    assert_eq!(got.body["value"], json!({"i": 2}));
    let deleted = t
        .call(Method::DELETE, "/api/v1/apps/shop/kv/users%2F3", None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/shop/kv/users%2F3", None)
            .await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(Method::DELETE, "/api/v1/apps/shop/kv/users%2F3", None)
            .await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/shop/kv/a%00", None).await,
        400,
        "invalid_input",
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/shop/kv?limit=5000", None)
            .await,
        400,
        "invalid_input",
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/shop/kv?color=red", None)
            .await,
        400,
        "invalid_input",
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/nowhere/kv", None).await,
        404,
        "not_found",
    );
    // Another app sees none of it.
    t.app_with_script("other").await;
    let other = t.call(Method::GET, "/api/v1/apps/other/kv", None).await;
    assert_eq!(other.body["entries"], json!([]));
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/other/kv/zeta", None)
            .await,
        404,
        "not_found",
    );
}

async fn put_blob(t: &TestApp, app: &AppName, name: &str, data: &[u8], content_type: Option<&str>) {
    let object = t
        .store
        .objects
        .put(app, bytes::Bytes::copy_from_slice(data))
        .await
        .expect("object");
    let effects = Effects {
        blobs: vec![BlobWrite::Put {
            name: name.to_owned(),
            object,
            size: data.len() as u64,
            content_type: content_type.map(str::to_owned),
        }],
        ..Effects::default()
    };
    t.store.outbox.apply(app, &effects).await.expect("apply");
}

async fn a_blob_is_served_with_its_exact_bytes_and_content_type(t: &TestApp) {
    let app = t.app_with_script("shop").await;
    let png: Vec<u8> = (0..=255u8).chain([0, 0, 13, 10]).collect();
    put_blob(t, &app, "img/logo.png", &png, Some("image/png")).await;
    put_blob(t, &app, "notes.txt", b"", None).await;
    put_blob(
        t,
        &app,
        "page.html",
        b"<script>alert(1)</script>",
        Some("text/html"),
    )
    .await;

    let got = t
        .call(Method::GET, "/api/v1/apps/shop/blobs/img/logo.png", None)
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.bytes, png);
    assert_eq!(got.headers[header::CONTENT_TYPE], "image/png");
    let empty = t
        .call(Method::GET, "/api/v1/apps/shop/blobs/notes.txt", None)
        .await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.bytes.is_empty());
    assert_eq!(
        empty.headers[header::CONTENT_TYPE],
        "application/octet-stream"
    );
    let html = t
        .call(Method::GET, "/api/v1/apps/shop/blobs/page.html", None)
        .await;
    assert_eq!(html.headers[header::CONTENT_DISPOSITION], "attachment");
    assert_eq!(html.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");

    let list = t
        .call(Method::GET, "/api/v1/apps/shop/blobs?limit=2", None)
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert_eq!(list.body["blobs"][0]["name"], "img/logo.png");
    assert_eq!(list.body["blobs"][0]["size"], png.len());
    assert_eq!(list.body["blobs"][0]["content_type"], "image/png");
    assert!(
        list.body["blobs"][0].get("object").is_none(),
        "object keys stay inside"
    );
    assert_eq!(list.body["next_after"], "notes.txt");
    let rest = t
        .call(Method::GET, "/api/v1/apps/shop/blobs?after=notes.txt", None)
        .await;
    assert_eq!(rest.body["blobs"][0]["name"], "page.html");
    let prefixed = t
        .call(Method::GET, "/api/v1/apps/shop/blobs?prefix=img%2F", None)
        .await;
    assert_eq!(prefixed.body["blobs"].as_array().map(Vec::len), Some(1));

    let deleted = t
        .call(Method::DELETE, "/api/v1/apps/shop/blobs/img/logo.png", None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/shop/blobs/img/logo.png", None)
            .await,
        404,
        "not_found",
    );
    assert_error(
        &t.call(Method::DELETE, "/api/v1/apps/shop/blobs/img/logo.png", None)
            .await,
        404,
        "not_found",
    );
    // Another app cannot read this app's blobs, whatever the name.
    t.app_with_script("other").await;
    for name in ["notes.txt", "..%2Fshop%2Fnotes.txt", "../shop/notes.txt"] {
        let crossed = t
            .call(
                Method::GET,
                &format!("/api/v1/apps/other/blobs/{name}"),
                None,
            )
            .await;
        assert!(
            crossed.status == StatusCode::NOT_FOUND || crossed.status == StatusCode::BAD_REQUEST,
            "{name}: {}",
            crossed.status
        );
        assert!(
            crossed.bytes.len() < 200 && !String::from_utf8_lossy(&crossed.bytes).contains("alert")
        );
    }
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/shop/blobs/a%01b", None)
            .await,
        400,
        "invalid_input",
    );
}

// ---------------------------------------------------------------------------------------
// Mailbox

async fn the_mailbox_lists_delivered_messages_newest_first(t: &TestApp) {
    let app = t.app_with_script("shop").await;
    for subject in ["first", "second"] {
        let message = EmailMessage {
            to: vec!["a@example.com".into()],
            subject: subject.into(),
            text: Some("hello".into()),
            html: None,
            from: None,
            reply_to: None,
        };
        t.store
            .mailbox
            .deliver(&app, &message)
            .await
            .expect("deliver");
    }
    let all = t.call(Method::GET, "/api/v1/apps/shop/mailbox", None).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.body["messages"].as_array().map(Vec::len), Some(2));
    assert_eq!(all.body["messages"][0]["message"]["subject"], "second");
    assert_eq!(
        all.body["messages"][0]["message"]["to"],
        json!(["a@example.com"])
    );
    assert!(all.body["messages"][0]["at"].is_string());
    let one = t
        .call(Method::GET, "/api/v1/apps/shop/mailbox?limit=1", None)
        .await;
    assert_eq!(one.body["messages"].as_array().map(Vec::len), Some(1));
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/shop/mailbox?limit=x", None)
            .await,
        400,
        "invalid_input",
    );
    assert_error(
        &t.call(Method::GET, "/api/v1/apps/nowhere/mailbox", None)
            .await,
        404,
        "not_found",
    );
}

// ---------------------------------------------------------------------------------------
// Cron scheduler and retention sweeper

async fn cron_trigger(t: &TestApp, app: &str, schedule: &str) -> TriggerId {
    let created = t
        .add_trigger(
            app,
            json!({"kind": "cron", "script": "handler", "schedule": schedule}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    created.body["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("a trigger id")
}

async fn an_every_second_trigger_fires_into_the_outbox_after_a_catalog_wake(t: &TestApp) {
    let app = t.app_with_script("shop").await;
    let shutdown = CancellationToken::new();
    // Started with no triggers: it sleeps until the catalog says triggers changed.
    let scheduler = CronScheduler::start(t.store.clone(), shutdown.clone());
    t.catalog.subscribe(scheduler.clone());
    cron_trigger(t, "shop", "* * * * * *").await;
    eventually("two cron events", BOUND, async || {
        (t.store.outbox.pending(&app).await.expect("pending") >= 2).then_some(())
    })
    .await;
    let events = t
        .store
        .outbox
        .claim_due("test-node", 100, Duration::from_secs(60))
        .await
        .expect("claim");
    assert!(events.len() >= 2);
    for event in &events {
        assert_eq!(event.kind, shared::EventKind::Cron);
        assert_eq!(
            event.script.as_ref().map(ScriptName::as_str),
            Some("handler")
        );
        assert_eq!(event.payload["schedule"], "* * * * * *");
        assert_eq!(event.payload["timezone"], "UTC");
    }
    let mut slots: Vec<_> = events.iter().map(|e| e.scheduled_at).collect();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), events.len(), "each slot fired once");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), scheduler.stopped())
        .await
        .expect("the scheduler stops on shutdown");
}

async fn a_trigger_last_fired_hours_ago_fires_once_for_the_latest_slot(t: &TestApp) {
    let app = t.app_with_script("shop").await;
    let id = cron_trigger(t, "shop", "0 * * * *").await;
    let hours_ago = Utc::now() - chrono::Duration::hours(5);
    let old_slot = chrono::DurationRound::duration_trunc(hours_ago, chrono::Duration::hours(1))
        .expect("an hour slot");
    assert!(
        t.store
            .triggers
            .fire_cron(id, old_slot)
            .await
            .expect("fire")
    );
    assert_eq!(t.store.outbox.pending(&app).await.expect("pending"), 1);

    let shutdown = CancellationToken::new();
    let scheduler = CronScheduler::start(t.store.clone(), shutdown.clone());
    eventually("the catch-up fire", BOUND, async || {
        (t.store.outbox.pending(&app).await.expect("pending") >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        t.store.outbox.pending(&app).await.expect("pending"),
        2,
        "one catch-up event, not one per missed hour"
    );
    let latest = chrono::DurationRound::duration_trunc(Utc::now(), chrono::Duration::hours(1))
        .expect("an hour slot");
    let triggers = t.store.triggers.list(&app).await.expect("list");
    assert_eq!(triggers[0].last_fired_at, Some(latest));
    assert!(matches!(triggers[0].spec, TriggerSpec::Cron { .. }));
    shutdown.cancel();
    scheduler.stopped().await;
}

async fn the_sweeper_purges_dead_letters_once_they_are_older_than_the_retention(t: &TestApp) {
    let app = t.app_with_script("shop").await;
    t.dead_letter(&app, json!(1)).await;
    let shutdown = CancellationToken::new();
    let task = RetentionSweeper::start(t.store.clone(), Duration::from_secs(2), shutdown.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        t.store
            .dead_letters
            .list(&app, None, 10)
            .await
            .expect("list")
            .len(),
        1,
        "a young dead letter is kept"
    );
    eventually("the purge", BOUND, async || {
        (t.store
            .dead_letters
            .list(&app, None, 10)
            .await
            .expect("list")
            .is_empty())
        .then_some(())
    })
    .await;
    assert_eq!(t.store.dead_letters.oldest().await.expect("oldest"), None);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the sweeper stops on shutdown")
        .expect("no panic");
}

async fn the_sweeper_purges_invocation_records_once_they_are_older_than_the_retention(t: &TestApp) {
    let app = t.app_with_script("shop").await;
    let record = |made: chrono::DateTime<Utc>| {
        let ms = u64::try_from(made.timestamp_millis()).expect("after 1970");
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, 0);
        shared::InvocationRecord {
            id: shared::InvocationId(uuid::Uuid::new_v7(ts)),
            app: app.clone(),
            script: ScriptName::parse("handler").expect("script"),
            version: Some(1),
            trigger: "http".into(),
            status: shared::InvocationStatus::Ok,
            started_at: made,
            duration_ms: 1,
            http_status: Some(200),
            summary: "GET /".into(),
            logs: Vec::new(),
            error: None,
            request_id: None,
            attempt: None,
        }
    };
    let old = record(Utc::now() - chrono::Duration::hours(1));
    let young = record(Utc::now());
    t.store
        .invocations
        .record(&[old.clone(), young.clone()])
        .await
        .expect("record");
    let listed = async || {
        let filter = shared::store::InvocationFilter {
            limit: 10,
            ..Default::default()
        };
        let records = t.store.invocations.list(&app, &filter).await.expect("list");
        records.iter().map(|r| r.id).collect::<Vec<_>>()
    };
    let shutdown = CancellationToken::new();
    let task = InvocationSweeper::start(t.store.clone(), Duration::from_secs(3), shutdown.clone());
    eventually("the old record's purge", BOUND, async || {
        (listed().await == vec![young.id]).then_some(())
    })
    .await;
    eventually("the young record's purge", BOUND, async || {
        (listed().await.is_empty()).then_some(())
    })
    .await;
    assert_eq!(t.store.invocations.oldest().await.expect("oldest"), None);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the sweeper stops on shutdown")
        .expect("no panic");
}

/// Two schedulers, each with its own pool on one PostgreSQL schema (two nodes), fire
/// every slot exactly once.
#[tokio::test]
async fn two_schedulers_on_one_postgres_schema_fire_each_slot_once() {
    let schema = storage::testing::TestUrl::postgres().await;
    let url = schema.url.clone();
    let a = storage::connect(&url).await.expect("node a");
    let b = storage::connect(&url).await.expect("node b");
    let app = AppName::parse("shop").expect("app");
    a.apps.create(&app).await.expect("app");
    a.scripts
        .deploy(&app, &ScriptName::parse("handler").expect("script"), "1")
        .await
        .expect("deploy");
    a.triggers
        .create(shared::store::NewTrigger {
            app: app.clone(),
            script: ScriptName::parse("handler").expect("script"),
            spec: TriggerSpec::Cron {
                schedule: "* * * * * *".into(),
                timezone: "UTC".into(),
            },
            max_attempts: 5,
        })
        .await
        .expect("trigger");
    let shutdown = CancellationToken::new();
    let sa = CronScheduler::start(a.clone(), shutdown.clone());
    let sb = CronScheduler::start(b.clone(), shutdown.clone());
    tokio::time::sleep(Duration::from_millis(3500)).await;
    shutdown.cancel();
    sa.stopped().await;
    sb.stopped().await;
    let events = a
        .outbox
        .claim_due("test-node", 1000, Duration::from_secs(60))
        .await
        .expect("claim");
    assert!(events.len() >= 3, "fired {} times in 3.5 s", events.len());
    let mut slots: Vec<_> = events.iter().map(|e| e.scheduled_at).collect();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), events.len(), "no slot fired twice");
    a.health.close().await;
    b.health.close().await;
    schema.close().await;
}

on_both_backends!(
    with_app =>
    event_triggers_of_every_kind_are_created_and_listed,
    bad_event_triggers_are_refused_with_the_problem_named,
    a_second_consumer_for_a_queue_is_a_conflict,
    every_new_route_needs_a_token,
    dead_letters_are_listed_shown_and_paged_newest_first,
    replaying_a_dead_letter_puts_the_event_back_and_removes_it,
    dead_letters_are_deleted_one_by_one_or_purged,
    config_values_are_set_read_listed_and_deleted,
    a_secret_value_never_appears_in_any_answer,
    kv_entries_are_paged_read_and_deleted,
    a_blob_is_served_with_its_exact_bytes_and_content_type,
    the_mailbox_lists_delivered_messages_newest_first,
    an_every_second_trigger_fires_into_the_outbox_after_a_catalog_wake,
    a_trigger_last_fired_hours_ago_fires_once_for_the_latest_slot,
    the_sweeper_purges_dead_letters_once_they_are_older_than_the_retention,
    the_sweeper_purges_invocation_records_once_they_are_older_than_the_retention,
);
