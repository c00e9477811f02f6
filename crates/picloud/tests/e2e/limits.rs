//! A script that loops forever, recurses without end, builds a huge value or throws is
//! stopped by its limit, reported in its invocation record, answered with an invocation id,
//! and never stops the server from serving others.
use reqwest::Method;
use serde_json::Value;

use crate::common::{invocation_id, record_of, spawn_app, spawn_app_with};
use testkit::{Backend, on_both_backends};

on_both_backends!(
    runaway_scripts_are_stopped_reported_and_answered_with_an_invocation_id,
    a_script_past_its_wall_clock_gets_504_while_other_requests_are_served,
);

async fn runaway_scripts_are_stopped_reported_and_answered_with_an_invocation_id(db: Backend) {
    let app = spawn_app(db).await;
    let mut recorded = app.recorded();
    let cases = [
        ("spin", "loop { }", "operation"),
        ("recurse", "fn f(n) { f(n + 1) } f(0)", "depth"),
        ("string", r#"let s = "x"; loop { s += s; }"#, ""),
        ("array", "let a = []; loop { a.push(a.len()); }", ""),
        ("throw", r#"throw "gave up""#, "gave up"),
    ];
    for (name, source, _) in &cases {
        app.endpoint("lab", name, &format!("GET /{name}"), source)
            .await;
    }
    app.endpoint("lab", "fine", "GET /fine", "\"fine\"").await;

    for (name, _, expected_in_record) in &cases {
        let res = app.get(&format!("/lab/{name}")).await;
        let status = res.status().as_u16();
        assert!(status == 500 || status == 504, "{name}: {status}");
        let id = invocation_id(&res);
        let body: Value = res.json().await.unwrap();
        assert!(
            body["error"]["message"].as_str().unwrap().contains(&id),
            "{name}: {body}"
        );

        let record = record_of(&mut recorded, &id).await;
        assert_ne!(record.status, shared::InvocationStatus::Ok, "{name}");
        let error = record.error.clone().unwrap_or_default();
        assert!(!error.is_empty(), "{name}: the record says why");
        assert!(
            error.to_lowercase().contains(expected_in_record),
            "{name}: {error}"
        );
        assert_eq!(record.http_status, Some(status));

        // The server keeps serving after every one of them.
        assert_eq!(
            app.get("/lab/fine").await.text().await.unwrap(),
            "fine",
            "after {name}"
        );
    }
}

async fn a_script_past_its_wall_clock_gets_504_while_other_requests_are_served(db: Backend) {
    let app = spawn_app_with(db, |c| {
        c.limits.max_operations = u64::MAX / 2;
        c.limits.timeout_ms = 1_500;
    })
    .await;
    app.endpoint("lab", "spin", "GET /spin", "loop { }").await;
    app.endpoint("lab", "fine", "GET /fine", "\"fine\"").await;
    let mut recorded = app.recorded();

    let spinner = tokio::spawn(app.call(Method::GET, "/lab/spin").send());
    // A head start for the spinner (nothing signals that a script started); the asserts
    // hold without it, it only makes them mean something.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for _ in 0..5 {
        assert_eq!(app.get("/lab/fine").await.text().await.unwrap(), "fine");
    }
    assert!(
        !spinner.is_finished(),
        "the spinning script is still running meanwhile"
    );

    let res = spinner.await.unwrap().unwrap();
    assert_eq!(res.status(), 504);
    let id = invocation_id(&res);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "timeout");
    assert!(body["error"]["message"].as_str().unwrap().contains(&id));

    let record = record_of(&mut recorded, &id).await;
    assert_eq!(record.status, shared::InvocationStatus::Timeout);
    assert_eq!(record.http_status, Some(504));
}
