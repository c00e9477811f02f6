//! Bad input on the admin API and on endpoints: a clear JSON error with the right status,
//! and nothing already stored is lost.
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{spawn_app, spawn_app_with};
use testkit::{Backend, on_both_backends};

on_both_backends!(
    admin_routes_refuse_missing_and_wrong_tokens,
    malformed_json_and_missing_fields_get_400_with_a_message,
    app_names_that_clash_with_platform_paths_or_are_not_slugs_get_400,
    routes_starting_with_underscore_get_400,
    unknown_apps_scripts_and_routes_get_404,
    a_syntax_error_gets_422_with_line_and_column_and_keeps_the_previous_version,
    a_request_body_over_the_limit_gets_413,
    a_created_token_works_and_stops_working_once_deleted,
    deleting_an_app_removes_its_endpoints_and_history,
);

async fn error_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.expect("a JSON error body");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    (status, body)
}

async fn admin_routes_refuse_missing_and_wrong_tokens(db: Backend) {
    let app = spawn_app(db).await;
    let res = app
        .client
        .get(format!("{}/api/v1/apps", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    let (status, body) = error_of(res).await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (401, "unauthorized")
    );

    let res = app
        .client
        .post(format!("{}/api/v1/apps", app.url))
        .bearer_auth("pct_wrong")
        .json(&json!({"name": "shop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res).await.0, 401);
    // Nothing was created by the refused call.
    let apps: Value = app
        .admin(Method::GET, "/apps")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(apps["apps"].as_array().unwrap().is_empty());

    // The OpenAPI document is public and lists the admin routes.
    let doc: Value = app
        .client
        .get(format!("{}/api/v1/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/api/v1/apps"].is_object(), "{doc}");
}

async fn malformed_json_and_missing_fields_get_400_with_a_message(db: Backend) {
    let app = spawn_app(db).await;
    let res = app
        .admin(Method::POST, "/apps")
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(res).await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (400, "invalid_input")
    );

    let res = app
        .admin(Method::POST, "/apps")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(res).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("name"),
        "{body}"
    );

    app.create_app("shop").await;
    let res = app
        .admin(Method::PUT, "/apps/shop/scripts/hello")
        .json(&json!({"src": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res).await.0, 400);
    let res = app
        .admin(Method::POST, "/apps/shop/triggers")
        .json(&json!({"kind": "http", "method": "FETCH", "path": "/x", "script": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res).await.0, 400);
}

async fn app_names_that_clash_with_platform_paths_or_are_not_slugs_get_400(db: Backend) {
    let app = spawn_app(db).await;
    for name in [
        "api",
        "dashboard",
        "healthz",
        "readyz",
        "metrics",
        "_hidden",
        "Shop",
        "a b",
        "../x",
        "",
    ] {
        let (status, body) = error_of(app.create_app(name).await).await;
        assert_eq!(status, 400, "{name}: {body}");
    }
    assert_eq!(app.create_app("shop").await.status(), 201);
    let (status, _) = error_of(app.create_app("shop").await).await;
    assert_eq!(status, 409);
}

async fn routes_starting_with_underscore_get_400(db: Backend) {
    let app = spawn_app(db).await;
    app.create_app("shop").await;
    app.deploy("shop", "hello", "\"hi\"").await;
    for path in ["/_realtime", "/_x/y", "no-slash", "/a//b"] {
        let (status, body) = error_of(app.add_route("shop", "GET", path, "hello").await).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    assert_eq!(
        app.add_route("shop", "GET", "/hello", "hello")
            .await
            .status(),
        201
    );
    let (status, _) = error_of(app.add_route("shop", "GET", "/hello", "hello").await).await;
    assert_eq!(status, 409);
}

async fn unknown_apps_scripts_and_routes_get_404(db: Backend) {
    let app = spawn_app(db).await;
    let (status, body) = error_of(app.admin(Method::GET, "/apps/nope").send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (404, "not_found")
    );
    assert_eq!(
        error_of(app.deploy("nope", "hello", "1").await).await.0,
        404
    );

    app.endpoint("shop", "hello", "GET /hello", "\"hi\"").await;
    let res = app
        .admin(Method::GET, "/apps/shop/scripts/missing")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res).await.0, 404);
    assert_eq!(
        error_of(app.add_route("shop", "GET", "/m", "missing").await)
            .await
            .0,
        404
    );
    let res = app
        .admin(Method::POST, "/apps/shop/scripts/hello/rollback")
        .json(&json!({"version": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res).await.0, 404);

    // A platform path that names nothing, and the bare root.
    let res = app
        .admin(Method::GET, "/no-such-thing")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res).await.0, 404);
    assert_eq!(error_of(app.get("/").await).await.0, 404);

    // Public side: unknown app, unknown route, known route with another method.
    assert_eq!(error_of(app.get("/nope/hello").await).await.0, 404);
    assert_eq!(error_of(app.get("/shop/missing").await).await.0, 404);
    let res = app
        .call(Method::DELETE, "/shop/hello")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(res).await.0, 405);
    // The server is still fine.
    assert_eq!(app.get("/shop/hello").await.text().await.unwrap(), "hi");
}

async fn a_syntax_error_gets_422_with_line_and_column_and_keeps_the_previous_version(db: Backend) {
    let app = spawn_app(db).await;
    app.endpoint("shop", "hello", "GET /hello", "\"good\"")
        .await;

    let res = app.deploy("shop", "hello", "let x = 1;\nlet y = ;\n").await;
    let (status, body) = error_of(res).await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (422, "compile_error")
    );
    assert_eq!(body["error"]["line"], 2, "{body}");
    assert!(body["error"]["column"].as_u64().unwrap() > 0);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("line 2"),
        "{body}"
    );

    assert_eq!(app.get("/shop/hello").await.text().await.unwrap(), "good");
    let script: Value = app
        .admin(Method::GET, "/apps/shop/scripts/hello")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(script["active_version"], 1);
    assert_eq!(script["latest_version"], 1);
}

async fn a_request_body_over_the_limit_gets_413(db: Backend) {
    let app = spawn_app_with(db, |c| c.http.max_body_bytes = 1024).await;
    app.endpoint("shop", "echo", "POST /echo", "request.body.len()")
        .await;

    let res = app
        .call(Method::POST, "/shop/echo")
        .body(vec![b'x'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "1024");
    let res = app
        .call(Method::POST, "/shop/echo")
        .body(vec![b'x'; 1025])
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(res).await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (413, "payload_too_large")
    );

    // A deploy over the script size limit is refused the same way.
    let huge = format!("\"{}\"", "x".repeat(300 * 1024));
    assert_eq!(
        error_of(app.deploy("shop", "echo", &huge).await).await.0,
        413
    );
    assert_eq!(
        app.call(Method::POST, "/shop/echo")
            .body("ok")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "2"
    );
}

async fn a_created_token_works_and_stops_working_once_deleted(db: Backend) {
    let app = spawn_app(db).await;
    let res = app
        .admin(Method::POST, "/tokens")
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let secret = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();

    let with_new = |method: Method, path: &str| {
        app.client
            .request(method, format!("{}/api/v1{path}", app.url))
            .bearer_auth(&secret)
    };
    assert_eq!(
        with_new(Method::GET, "/apps")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let listed: Value = with_new(Method::GET, "/tokens")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !listed.to_string().contains(&secret),
        "a listing never shows a secret"
    );

    assert_eq!(
        app.admin(Method::DELETE, &format!("/tokens/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        with_new(Method::GET, "/apps")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

async fn deleting_an_app_removes_its_endpoints_and_history(db: Backend) {
    let app = spawn_app(db).await;
    app.endpoint("shop", "hello", "GET /hello", "\"hi\"").await;
    app.endpoint("other", "hello", "GET /hello", "\"still here\"")
        .await;
    assert_eq!(app.get("/shop/hello").await.status(), 200);

    assert_eq!(
        app.admin(Method::DELETE, "/apps/shop")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(app.get("/shop/hello").await.status(), 404);
    assert_eq!(
        app.admin(Method::GET, "/apps/shop")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        app.get("/other/hello").await.text().await.unwrap(),
        "still here"
    );
    // The name is free again, with nothing left over.
    assert_eq!(app.create_app("shop").await.status(), 201);
    assert_eq!(app.get("/shop/hello").await.status(), 404);
    let scripts: Value = app
        .admin(Method::GET, "/apps/shop/scripts")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(scripts["scripts"].as_array().unwrap().is_empty());
}
