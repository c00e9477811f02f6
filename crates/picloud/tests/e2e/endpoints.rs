//! The user's path: create an app, deploy a script, bind a route, call it, redeploy, roll
//! back, and read what happened.
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{invocation_id, record_of, spawn_app};
use testkit::{Backend, on_both_backends};

on_both_backends!(
    a_deployed_script_answers_on_its_route,
    the_request_reaches_the_script_with_params_query_headers_and_body,
    a_map_becomes_json_and_response_sets_status_and_headers,
    redeploying_serves_the_new_version_and_rollback_the_old_one,
    invocations_list_status_duration_version_and_captured_logs,
    a_script_error_reaches_the_caller_as_500_with_an_invocation_id_and_no_internals,
    apps_do_not_see_each_others_routes,
);

async fn a_deployed_script_answers_on_its_route(db: Backend) {
    let app = spawn_app(db).await;
    app.endpoint("shop", "hello", "GET /hello", r#""Hello, " + "world!""#)
        .await;

    let res = app.get("/shop/hello").await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(res.headers().contains_key("x-picloud-invocation-id"));
    assert_eq!(res.text().await.unwrap(), "Hello, world!");
}

async fn the_request_reaches_the_script_with_params_query_headers_and_body(db: Backend) {
    let app = spawn_app(db).await;
    let source = r#"
        #{
            method: request.method,
            path: request.path,
            id: request.params.id,
            q: request.query.q,
            agent: request.headers["x-agent"],
            body: request.body,
            name: request.json.name,
        }
    "#;
    app.endpoint("shop", "echo", "POST /users/:id", source)
        .await;

    let res = app
        .call(Method::POST, "/shop/users/42?q=shoes&x=1")
        .header("X-Agent", "tests")
        .json(&json!({ "name": "Ada" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/users/42");
    assert_eq!(body["id"], "42");
    assert_eq!(body["q"], "shoes");
    assert_eq!(body["agent"], "tests");
    assert_eq!(body["body"], r#"{"name":"Ada"}"#);
    assert_eq!(body["name"], "Ada");
}

async fn a_map_becomes_json_and_response_sets_status_and_headers(db: Backend) {
    let app = spawn_app(db).await;
    app.endpoint("shop", "list", "GET /items", "[1, 2, #{ three: 3 }]")
        .await;
    app.endpoint(
        "shop",
        "created",
        "POST /items",
        r#"response(201, #{ ok: true }, #{ "x-item": "7", "cache-control": "no-store" })"#,
    )
    .await;
    app.endpoint(
        "shop",
        "teapot",
        "GET /teapot",
        r#"response(418, "short and stout")"#,
    )
    .await;

    let res = app.get("/shop/items").await;
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!([1, 2, { "three": 3 }])
    );

    let res = app.call(Method::POST, "/shop/items").send().await.unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["x-item"], "7");
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.json::<Value>().await.unwrap(), json!({ "ok": true }));

    let res = app.get("/shop/teapot").await;
    assert_eq!(res.status(), 418);
    assert_eq!(res.text().await.unwrap(), "short and stout");
}

async fn redeploying_serves_the_new_version_and_rollback_the_old_one(db: Backend) {
    let app = spawn_app(db).await;
    app.endpoint("shop", "hello", "GET /hello", r#""v1""#).await;
    assert_eq!(app.get("/shop/hello").await.text().await.unwrap(), "v1");

    let res = app.deploy("shop", "hello", r#""v2""#).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["version"], 2);
    assert_eq!(app.get("/shop/hello").await.text().await.unwrap(), "v2");

    let versions: Value = app
        .admin(Method::GET, "/apps/shop/scripts/hello/versions")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: Vec<i64> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, vec![2, 1]);

    let res = app
        .admin(Method::POST, "/apps/shop/scripts/hello/rollback")
        .json(&json!({ "version": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(app.get("/shop/hello").await.text().await.unwrap(), "v1");

    // A deploy after a rollback gets a fresh number; numbers are never reused.
    let res = app.deploy("shop", "hello", r#""v3""#).await;
    assert_eq!(res.json::<Value>().await.unwrap()["version"], 3);
    assert_eq!(app.get("/shop/hello").await.text().await.unwrap(), "v3");
}

async fn invocations_list_status_duration_version_and_captured_logs(db: Backend) {
    let app = spawn_app(db).await;
    let mut recorded = app.recorded();
    app.endpoint(
        "shop",
        "hello",
        "GET /hello",
        r#"print("printed"); log::info("informed"); log::warn("warned"); "hi""#,
    )
    .await;
    app.endpoint(
        "shop",
        "boom",
        "GET /boom",
        r#"log::error("about to fail"); throw "boom""#,
    )
    .await;

    let ok = app.get("/shop/hello").await;
    let ok_id = invocation_id(&ok);
    let failed = app.get("/shop/boom").await;
    let failed_id = invocation_id(&failed);
    record_of(&mut recorded, &ok_id).await;
    record_of(&mut recorded, &failed_id).await;

    let all = app.invocations("shop", "").await;
    let list = all["invocations"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], failed_id.as_str(), "newest first");

    let hello = &list[1];
    assert_eq!(hello["script"], "hello");
    assert_eq!(hello["status"], "ok");
    assert_eq!(hello["version"], 1);
    assert_eq!(hello["trigger"], "http");
    assert_eq!(hello["http_status"], 200);
    assert_eq!(hello["summary"], "GET /hello");
    assert!(hello["duration_ms"].is_u64());
    let logs: Vec<(&str, &str)> = hello["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["level"].as_str().unwrap(), l["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        logs,
        vec![
            ("print", "printed"),
            ("info", "informed"),
            ("warn", "warned")
        ]
    );

    let boom = &list[0];
    assert_eq!(boom["status"], "error");
    assert_eq!(boom["http_status"], 500);
    assert!(boom["error"].as_str().unwrap().contains("boom"), "{boom}");
    assert_eq!(boom["logs"][0]["message"], "about to fail");

    let only_errors = app.invocations("shop", "status=error").await;
    assert_eq!(only_errors["invocations"].as_array().unwrap().len(), 1);
    let by_script = app.invocations("shop", "script=hello").await;
    assert_eq!(by_script["invocations"][0]["id"], ok_id.as_str());
    let one_page = app.invocations("shop", "limit=1").await;
    assert_eq!(one_page["next_before"], failed_id.as_str());
    let next = app
        .invocations("shop", &format!("limit=1&before={failed_id}"))
        .await;
    assert_eq!(next["invocations"][0]["id"], ok_id.as_str());
}

async fn a_script_error_reaches_the_caller_as_500_with_an_invocation_id_and_no_internals(
    db: Backend,
) {
    let app = spawn_app(db).await;
    app.endpoint(
        "shop",
        "broken",
        "GET /broken",
        r#"let x = 1; x.no_such_method(); "never""#,
    )
    .await;
    app.endpoint(
        "shop",
        "thrower",
        "GET /throw",
        r#"throw "secret detail from the script""#,
    )
    .await;

    for path in ["/shop/broken", "/shop/throw"] {
        let res = app.get(path).await;
        assert_eq!(res.status(), 500);
        let id = invocation_id(&res);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "script_failed");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&id),
            "the message names the invocation: {message}"
        );
        assert!(!message.contains("secret detail"), "{message}");
        assert!(!message.contains("no_such_method"), "{message}");
        let dir = app.dir.path().display().to_string();
        assert!(
            !body.to_string().contains(&dir),
            "the data dir leaked: {body}"
        );
    }
}

async fn apps_do_not_see_each_others_routes(db: Backend) {
    let app = spawn_app(db).await;
    app.endpoint("alpha", "secret", "GET /secret", r#""alpha's secret""#)
        .await;
    app.create_app("beta").await;

    assert_eq!(app.get("/alpha/secret").await.status(), 200);
    let res = app.get("/beta/secret").await;
    assert_eq!(res.status(), 404);
    // beta cannot bind alpha's script either.
    assert_eq!(
        app.add_route("beta", "GET", "/x", "secret").await.status(),
        404
    );
    let beta = app.invocations("beta", "").await;
    assert!(beta["invocations"].as_array().unwrap().is_empty());
}
