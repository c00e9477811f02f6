//! Invocation records: filtered and paged.
use super::*;

fn record(
    app_name: &str,
    script_name: &str,
    status: InvocationStatus,
    started_at: chrono::DateTime<Utc>,
) -> InvocationRecord {
    InvocationRecord {
        id: InvocationId::new(),
        app: app(app_name),
        script: script(script_name),
        version: Some(1),
        trigger: "http".into(),
        status,
        started_at,
        duration_ms: 3,
        http_status: Some(200),
        summary: "GET /".into(),
        logs: vec![],
        error: None,
        request_id: None,
        attempt: None,
        trace_id: None,
    }
}

async fn invocations_can_be_filtered_and_paged(t: &TestApp) {
    t.create_app("shop").await;
    let base = Utc::now() - Duration::hours(1);
    let mut records = Vec::new();
    for i in 0..5 {
        let status = if i == 2 {
            InvocationStatus::Error
        } else {
            InvocationStatus::Ok
        };
        let name = if i == 4 { "other" } else { "user" };
        let mut r = record("shop", name, status, base + Duration::minutes(i));
        if i == 1 || i == 4 {
            r.trigger = "cron".into();
        }
        records.push(r);
    }
    t.store.invocations.record(&records).await.expect("record");

    let all = t
        .call(Method::GET, "/api/v1/apps/shop/invocations", None)
        .await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    let ids: Vec<&str> = all.body["invocations"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 5);
    assert_eq!(ids[0], records[4].id.to_string(), "newest first");
    assert_eq!(all.body["next_before"], Value::Null);

    let page1 = t
        .call(Method::GET, "/api/v1/apps/shop/invocations?limit=2", None)
        .await;
    assert_eq!(page1.body["invocations"].as_array().map(Vec::len), Some(2));
    let cursor = page1.body["next_before"]
        .as_str()
        .expect("a full page has a cursor")
        .to_owned();
    assert_eq!(cursor, records[3].id.to_string());
    let page2 = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/invocations?limit=2&before={cursor}"),
            None,
        )
        .await;
    assert_eq!(
        page2.body["invocations"][0]["id"],
        records[2].id.to_string()
    );
    let page3_cursor = page2.body["next_before"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let page3 = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/invocations?limit=2&before={page3_cursor}"),
            None,
        )
        .await;
    assert_eq!(page3.body["invocations"].as_array().map(Vec::len), Some(1));
    assert_eq!(page3.body["next_before"], Value::Null);

    let errors = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/invocations?status=error",
            None,
        )
        .await;
    assert_eq!(errors.body["invocations"].as_array().map(Vec::len), Some(1));
    assert_eq!(errors.body["invocations"][0]["status"], "error");

    let other = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/invocations?script=other",
            None,
        )
        .await;
    assert_eq!(other.body["invocations"].as_array().map(Vec::len), Some(1));
    assert_eq!(other.body["invocations"][0]["script"], "other");

    let crons = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/invocations?trigger=cron",
            None,
        )
        .await;
    let cron_ids: Vec<&str> = crons.body["invocations"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    let (r4, r1) = (records[4].id.to_string(), records[1].id.to_string());
    assert_eq!(cron_ids, [r4.as_str(), r1.as_str()], "{}", crons.body);
    // A page of one, then the next: the filter holds across the cursor.
    let first = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/invocations?trigger=cron&limit=1",
            None,
        )
        .await;
    assert_eq!(first.body["next_before"], r4.as_str());
    let rest = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/invocations?trigger=cron&limit=1&before={r4}"),
            None,
        )
        .await;
    assert_eq!(rest.body["invocations"][0]["id"], r1.as_str());
    let user_http = t
        .call(
            Method::GET,
            "/api/v1/apps/shop/invocations?trigger=http&script=user",
            None,
        )
        .await;
    assert_eq!(
        user_http.body["invocations"].as_array().map(Vec::len),
        Some(3),
        "{}",
        user_http.body
    );

    let since = (base + Duration::minutes(3)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let recent = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/invocations?since={since}"),
            None,
        )
        .await;
    assert_eq!(
        recent.body["invocations"].as_array().map(Vec::len),
        Some(2),
        "{}",
        recent.body
    );
    let older = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/invocations?until={since}"),
            None,
        )
        .await;
    assert_eq!(
        older.body["invocations"].as_array().map(Vec::len),
        Some(3),
        "{}",
        older.body
    );

    let one = t
        .call(
            Method::GET,
            &format!("/api/v1/apps/shop/invocations/{}", records[1].id),
            None,
        )
        .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body["id"], records[1].id.to_string());
    assert_eq!(one.body["summary"], "GET /");

    for bad in [
        "status=weird",
        "limit=0",
        "limit=501",
        "limit=x",
        "since=yesterday",
        "before=123",
        "script=a/b",
        "trigger=pigeon",
        "colour=red",
    ] {
        let answer = t
            .call(
                Method::GET,
                &format!("/api/v1/apps/shop/invocations?{bad}"),
                None,
            )
            .await;
        assert_error(&answer, 400, "invalid_input");
    }
}

on_both_backends!(
    with_app =>
    invocations_can_be_filtered_and_paged,
);
