//! Realtime end to end (docs/realtime.md): browsers subscribe over SSE with a token a
//! script minted, hear what commits (and never what a throwing run published), resume by
//! id without gap or duplicate, get `reset` past the buffer and `expired` at the token's
//! end; bad subscriptions get JSON errors before any stream; limits hold.
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{SseStream, TestApp, spawn_app, spawn_app_with};
use testkit::{Backend, on_both_backends};

on_both_backends!(
    a_browser_hears_what_commits_and_never_what_a_throwing_run_published,
    a_client_resumes_after_its_last_event_id_with_no_gap_and_no_duplicate,
    a_resume_under_concurrent_publishes_has_no_gap_and_no_duplicate_at_the_seam,
    a_resume_point_older_than_the_buffer_gets_a_reset_naming_the_oldest_id,
    a_stream_ends_with_expired_when_its_token_does,
    bad_subscriptions_get_json_errors_before_any_stream,
    a_rotated_key_refuses_earlier_tokens_and_the_key_survives_a_restart,
    connection_limits_answer_429_per_app_and_503_per_server,
    a_subscriber_that_stops_reading_is_cut_off_while_others_hear_everything,
    cors_origins_set_per_app_are_answered_on_the_stream,
    the_admin_api_exposes_lists_and_unexposes_topics,
);

/// `shop` with `orders` exposed and a `GET /token` endpoint for `orders` (5 minutes).
async fn shop(app: &TestApp) {
    app.token_endpoint("shop", r#"#{topics: ["orders"], sub: "user-42", ttl: 300}"#)
        .await;
    assert_eq!(app.expose("shop", "orders").await.status(), 201);
}

async fn a_browser_hears_what_commits_and_never_what_a_throwing_run_published(db: Backend) {
    let app = spawn_app(db).await;
    shop(&app).await;
    app.endpoint(
        "shop",
        "order",
        "POST /orders",
        r#"pubsub::publish("orders", #{ n: 1 }); pubsub::publish("private", 0); "ok""#,
    )
    .await;
    app.endpoint(
        "shop",
        "broken",
        "POST /broken",
        r#"pubsub::publish("orders", #{ n: -1 }); throw "no""#,
    )
    .await;
    let token = app.token("shop").await;

    let res = app
        .realtime("shop", "orders")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.get("content-encoding").is_none());
    let mut stream = SseStream::new(res);
    let first = stream.next_any().await.unwrap();
    assert_eq!(first.retry.as_deref(), Some("3000"), "{first:?}");

    let broken = app.call(Method::POST, "/shop/broken").send().await.unwrap();
    assert_eq!(broken.status(), 500);
    let ok = app.call(Method::POST, "/shop/orders").send().await.unwrap();
    assert_eq!(ok.text().await.unwrap(), "ok");
    assert_eq!(
        app.publish("shop", "orders", json!({"n": 2}))
            .await
            .status(),
        202
    );

    let events = stream.take(2).await;
    // The throwing run's publish never took an id: the first event is 1.
    assert_eq!(events[0].id(), 1);
    assert_eq!(events[0].event.as_deref(), Some("orders"));
    assert_eq!(events[0].json(), json!({"n": 1}));
    assert_eq!(events[1].id(), 2);
    assert_eq!(events[1].json(), json!({"n": 2}));

    // The signing key is a secret nobody lists.
    let secrets: Value = app
        .admin(Method::GET, "/apps/shop/secrets")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(secrets["secrets"], json!([]));
}

async fn publish_n(app: &TestApp, from: u64, to: u64) {
    for n in from..=to {
        let res = app.publish("shop", "orders", json!({ "n": n })).await;
        assert_eq!(res.status(), 202);
    }
}

fn ids(events: &[crate::common::SseMessage]) -> Vec<u64> {
    events.iter().map(|e| e.id()).collect()
}

async fn a_client_resumes_after_its_last_event_id_with_no_gap_and_no_duplicate(db: Backend) {
    let app = spawn_app(db).await;
    shop(&app).await;
    let token = app.token("shop").await;
    publish_n(&app, 1, 5).await;

    // The header, as EventSource sends it on a reconnect.
    let mut stream = app
        .subscribe(
            app.realtime("shop", "orders")
                .bearer_auth(&token)
                .header("last-event-id", "2"),
        )
        .await;
    assert_eq!(ids(&stream.take(3).await), [3, 4, 5]);
    publish_n(&app, 6, 6).await;
    let live = stream.next().await.unwrap();
    assert_eq!((live.id(), live.json()), (6, json!({"n": 6})));

    // The query, with the token in the query too (a plain EventSource).
    let mut stream = app
        .subscribe(app.realtime_with(
            "shop",
            &[
                ("topics", "orders"),
                ("token", token.as_str()),
                ("last_event_id", "4"),
            ],
        ))
        .await;
    assert_eq!(ids(&stream.take(2).await), [5, 6]);

    // A garbage Last-Event-ID is no resume point: live events only.
    let mut stream = app
        .subscribe(
            app.realtime("shop", "orders")
                .bearer_auth(&token)
                .header("last-event-id", "abc"),
        )
        .await;
    let _ = stream.next_any().await; // retry:
    publish_n(&app, 7, 7).await;
    assert_eq!(stream.next().await.unwrap().id(), 7);
}

async fn a_resume_under_concurrent_publishes_has_no_gap_and_no_duplicate_at_the_seam(db: Backend) {
    let app = spawn_app(db).await;
    shop(&app).await;
    let token = app.token("shop").await;
    publish_n(&app, 1, 10).await;
    const TOTAL: u64 = 60;
    let url = app.url.clone();
    let publisher = tokio::spawn(async move {
        let client = reqwest::Client::new();
        for n in 11..=TOTAL {
            let res = client
                .post(format!(
                    "{url}/api/v1/apps/shop/realtime/topics/orders/publish"
                ))
                .bearer_auth(picloud::config::TEST_ADMIN_TOKEN)
                .json(&json!({ "payload": { "n": n } }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 202);
        }
    });
    let mut stream = app
        .subscribe(
            app.realtime("shop", "orders")
                .bearer_auth(&token)
                .header("last-event-id", "0"),
        )
        .await;
    let events = stream.take(TOTAL as usize).await;
    publisher.await.unwrap();
    assert_eq!(ids(&events), (1..=TOTAL).collect::<Vec<_>>());
    for event in &events {
        assert_eq!(event.json(), json!({ "n": event.id() }));
    }
}

async fn a_resume_point_older_than_the_buffer_gets_a_reset_naming_the_oldest_id(db: Backend) {
    let app = spawn_app(db).await;
    shop(&app).await;
    let token = app.token("shop").await;
    publish_n(&app, 1, 10).await;
    let removed = app
        .store
        .realtime
        .prune(3, chrono::DateTime::UNIX_EPOCH)
        .await
        .unwrap();
    assert_eq!(removed, 7);

    let mut stream = app
        .subscribe(
            app.realtime("shop", "orders")
                .bearer_auth(&token)
                .header("last-event-id", "2"),
        )
        .await;
    let reset = stream.next().await.unwrap();
    assert_eq!(reset.event.as_deref(), Some("reset"));
    assert_eq!(reset.json(), json!({"oldest": 8}));
    assert_eq!(reset.id, None, "a reset moves no resume point");
    assert_eq!(ids(&stream.take(3).await), [8, 9, 10]);

    // A resume point still in the buffer gets no reset.
    let mut stream = app
        .subscribe(
            app.realtime("shop", "orders")
                .bearer_auth(&token)
                .header("last-event-id", "7"),
        )
        .await;
    assert_eq!(ids(&stream.take(3).await), [8, 9, 10]);
    // Nor does one ahead of every id given out (a database that was reset): reset.
    let mut stream = app
        .subscribe(
            app.realtime("shop", "orders")
                .bearer_auth(&token)
                .header("last-event-id", "99"),
        )
        .await;
    assert_eq!(stream.next().await.unwrap().event.as_deref(), Some("reset"));
}

async fn a_stream_ends_with_expired_when_its_token_does(db: Backend) {
    let app = spawn_app(db).await;
    // Expiry is a whole second rounded up: a ttl of 1 leaves the token at least a second,
    // enough to open the stream whenever in a second it was minted.
    app.token_endpoint("shop", r#"#{topics: ["orders"], ttl: 1}"#)
        .await;
    app.expose("shop", "orders").await;
    let token = app.token("shop").await;
    let mut stream = app
        .subscribe(app.realtime("shop", "orders").bearer_auth(&token))
        .await;
    let expired = stream.next().await.unwrap();
    assert_eq!(expired.event.as_deref(), Some("expired"));
    assert_eq!(expired.id, None);
    assert_eq!(
        stream.next_any().await,
        None,
        "the stream ends after expired"
    );
    // The same token is refused from now on.
    let res = app
        .realtime("shop", "orders")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["message"], "the token has expired");
}

/// The status and error code of a refused subscription.
async fn refused(request: reqwest::RequestBuilder) -> (StatusCode, String) {
    let res = request.send().await.unwrap();
    let status = res.status();
    assert_eq!(
        res.headers()["content-type"],
        "application/json",
        "{status}"
    );
    let body: Value = res.json().await.unwrap();
    (status, body["error"]["code"].as_str().unwrap().to_owned())
}

async fn bad_subscriptions_get_json_errors_before_any_stream(db: Backend) {
    let app = spawn_app(db).await;
    app.token_endpoint(
        "shop",
        r#"#{topics: ["orders", "drafts"], sub: "u", ttl: 300}"#,
    )
    .await;
    app.expose("shop", "orders").await;
    let token = app.token("shop").await;
    app.create_app("other").await;
    app.token_endpoint("other", r#"#{topics: ["orders"]}"#)
        .await;
    app.expose("other", "orders").await;
    let other_token = app.token("other").await;
    let (body, mac) = token.split_once('.').unwrap();
    let forged = format!("{body}.{}", mac.chars().rev().collect::<String>());

    let many = (0..17)
        .map(|i| format!("t{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let long = "x".repeat(129);
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "unknown app",
            app.realtime("nope", "orders").bearer_auth(&token),
            404,
            "not_found",
        ),
        (
            "no topics",
            app.realtime("shop", "").bearer_auth(&token),
            400,
            "invalid_input",
        ),
        (
            "too many topics",
            app.realtime("shop", &many).bearer_auth(&token),
            400,
            "invalid_input",
        ),
        (
            "an overlong topic",
            app.realtime("shop", &long).bearer_auth(&token),
            400,
            "invalid_input",
        ),
        (
            "no token",
            app.realtime("shop", "orders"),
            401,
            "unauthorized",
        ),
        (
            "a malformed token",
            app.realtime("shop", "orders").bearer_auth("not-a-token"),
            401,
            "unauthorized",
        ),
        (
            "a forged token",
            app.realtime("shop", "orders").bearer_auth(&forged),
            401,
            "unauthorized",
        ),
        (
            "another app's token",
            app.realtime("shop", "orders").bearer_auth(&other_token),
            401,
            "unauthorized",
        ),
        (
            "a topic the token does not grant",
            app.realtime("shop", "orders,chat").bearer_auth(&token),
            401,
            "unauthorized",
        ),
        (
            "a topic that is not exposed",
            app.realtime("shop", "drafts").bearer_auth(&token),
            403,
            "forbidden",
        ),
        (
            "a POST",
            app.client
                .post(format!("{}/shop/_realtime?topics=orders", app.url))
                .bearer_auth(&token),
            405,
            "method_not_allowed",
        ),
    ];
    for (what, request, status, code) in cases {
        let (got, got_code) = refused(request).await;
        assert_eq!((got.as_u16(), got_code.as_str()), (status, code), "{what}");
    }
    // The server is still up and serving.
    app.subscribe(app.realtime("shop", "orders").bearer_auth(&token))
        .await;
}

async fn a_rotated_key_refuses_earlier_tokens_and_the_key_survives_a_restart(db: Backend) {
    let mut app = spawn_app(db).await;
    shop(&app).await;
    let before = app.token("shop").await;
    app.restart().await;
    // Minted before the restart, still good after it.
    app.subscribe(app.realtime("shop", "orders").bearer_auth(&before))
        .await;

    let res = app
        .admin(Method::POST, "/apps/shop/realtime/rotate-key")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let (status, code) = refused(app.realtime("shop", "orders").bearer_auth(&before)).await;
    assert_eq!((status.as_u16(), code.as_str()), (401, "unauthorized"));
    let after = app.token("shop").await;
    app.subscribe(app.realtime("shop", "orders").bearer_auth(&after))
        .await;
}

async fn connection_limits_answer_429_per_app_and_503_per_server(db: Backend) {
    let app = spawn_app_with(db, |c| {
        c.realtime.max_connections_per_app = 2;
        c.realtime.max_connections = 3;
    })
    .await;
    shop(&app).await;
    app.create_app("blog").await;
    app.token_endpoint("blog", r#"#{topics: ["posts"]}"#).await;
    app.expose("blog", "posts").await;
    let shop_token = app.token("shop").await;
    let blog_token = app.token("blog").await;
    let shop = || app.realtime("shop", "orders").bearer_auth(&shop_token);
    let blog = || app.realtime("blog", "posts").bearer_auth(&blog_token);

    let _a = app.subscribe(shop()).await;
    let mut b = app.subscribe(shop()).await;
    let res = shop().send().await.unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    let _c = app.subscribe(blog()).await;
    let res = blog().send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));

    // A closed stream gives its place back.
    let _ = b.next_any().await;
    drop(b);
    testkit::eventually(
        "the place comes back",
        Duration::from_secs(10),
        async || {
            let res = shop().send().await.unwrap();
            (res.status() == 200).then_some(())
        },
    )
    .await;
}

/// Open streams of `shop`'s `orders`, as the admin API counts them.
async fn subscribers(app: &TestApp) -> u64 {
    let list: Value = app
        .admin(Method::GET, "/apps/shop/realtime/topics")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["topics"][0]["subscribers"].as_u64().unwrap()
}

async fn a_subscriber_that_stops_reading_is_cut_off_while_others_hear_everything(db: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app_with(db, |c| c.http.write_timeout_ms = 300).await;
    shop(&app).await;
    let token = app.token("shop").await;
    let mut reader = app
        .subscribe(app.realtime("shop", "orders").bearer_auth(&token))
        .await;
    // A client with a small receive window that reads the answer's head, then nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = app.url.trim_start_matches("http://").parse().unwrap();
    let mut stalled = socket.connect(addr).await.unwrap();
    let request =
        format!("GET /shop/_realtime?topics=orders&token={token} HTTP/1.1\r\nhost: x\r\n\r\n");
    stalled.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 64];
    let n = stalled.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    assert_eq!(subscribers(&app).await, 2);

    let big = "x".repeat(32 * 1024);
    let mut published = 0u64;
    let mut heard = 0u64;
    // Publish until the stalled client is gone; the reader hears every event meanwhile.
    while subscribers(&app).await == 2 {
        assert!(published < 2_000, "the stalled client was never cut off");
        app.publish("shop", "orders", json!({ "pad": big })).await;
        published += 1;
        while heard < published {
            let event = reader.next().await.unwrap();
            heard += 1;
            assert_eq!(event.id(), heard);
        }
    }
    assert_eq!(subscribers(&app).await, 1);
}

async fn cors_origins_set_per_app_are_answered_on_the_stream(db: Backend) {
    let app = spawn_app(db).await;
    shop(&app).await;
    let token = app.token("shop").await;
    let res = app
        .admin(Method::PUT, "/apps/shop/realtime/cors")
        .json(&json!({"origins": ["https://shop.example"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let bad = app
        .admin(Method::PUT, "/apps/shop/realtime/cors")
        .json(&json!({"origins": ["https://shop.example/path"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let res = app
        .realtime("shop", "orders")
        .bearer_auth(&token)
        .header("origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let res = app
        .realtime("shop", "orders")
        .bearer_auth(&token)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    // Errors carry it too, so a page can read them.
    let res = app
        .realtime("shop", "orders")
        .header("origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let preflight = app
        .client
        .request(Method::OPTIONS, format!("{}/shop/_realtime", app.url))
        .header("origin", "https://shop.example")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert!(
        preflight.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
}

async fn the_admin_api_exposes_lists_and_unexposes_topics(db: Backend) {
    let app = spawn_app(db).await;
    shop(&app).await;
    assert_eq!(app.expose("shop", "orders").await.status(), 200, "again");
    assert_eq!(app.expose("nope", "orders").await.status(), 404);
    assert_eq!(app.expose("shop", "bad name").await.status(), 400);
    let token = app.token("shop").await;
    let _stream = app
        .subscribe(app.realtime("shop", "orders").bearer_auth(&token))
        .await;
    let list: Value = app
        .admin(Method::GET, "/apps/shop/realtime/topics")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list,
        json!({"topics": [{"topic": "orders", "subscribers": 1}]})
    );
    let gone = app
        .admin(Method::DELETE, "/apps/shop/realtime/topics/orders")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
    let again = app
        .admin(Method::DELETE, "/apps/shop/realtime/topics/orders")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    let (status, code) = refused(app.realtime("shop", "orders").bearer_auth(&token)).await;
    assert_eq!((status.as_u16(), code.as_str()), (403, "forbidden"));
    // A publish to a private topic still reaches triggers, not browsers.
    let res = app.publish("shop", "orders", json!(1)).await;
    assert_eq!(res.status(), 202);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"topic": "orders", "realtime": false})
    );
}
