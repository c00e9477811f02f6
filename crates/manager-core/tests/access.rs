//! Who may call what: every admin route of the real route table (`ROUTES`, from which the
//! router is built) x role (admin, deploy, read) x app (in the token's scope or not),
//! through `router` with `oneshot` on a real SQLite store. A call the token may not make
//! answers 403 `forbidden`; one it may make is never 401, 403, 405 nor a missing route.
use axum::http::{Method, StatusCode};
use manager_core::{ROUTES, Route};
use serde_json::{Value, json};
use testkit::Backend;
use testkit::admin::AdminApp;

/// The one admin test app (`testkit::admin`) on SQLite, with this file's shortcuts.
struct Setup(AdminApp);

impl std::ops::Deref for Setup {
    type Target = AdminApp;

    fn deref(&self) -> &AdminApp {
        &self.0
    }
}

async fn setup() -> Setup {
    Setup(AdminApp::start(Backend::Sqlite).await)
}

impl Setup {
    /// Every call has a JSON body (`{}` when none is given), so a route that reads one
    /// never refuses it before the access check.
    async fn call(
        &self,
        token: &str,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let body = body.map_or_else(|| "{}".to_owned(), |b| b.to_string());
        let answer = self
            .0
            .raw_as(token, method, uri, Some("application/json"), &body)
            .await;
        (answer.status, answer.body)
    }

    /// A new token's secret.
    async fn token(&self, role: &str, apps: Option<&[&str]>) -> String {
        self.0.new_token(role, apps).await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Read,
    Deploy,
    Admin,
}

/// The policy, written out here independently of the route table's `Access` column, so a
/// route marked with the wrong access fails. Any new route falls under the app rule
/// (reads for every role, changes for deploy and admin) unless listed above it.
fn allowed(route: &Route, role: Role, in_scope: bool) -> bool {
    match (route.method, route.path) {
        (_, p) if p.starts_with("/api/v1/tokens") => role == Role::Admin,
        // The whole server's data, every app's secrets among it.
        ("GET", "/api/v1/backup") | ("POST", "/api/v1/restore") => role == Role::Admin,
        ("DELETE", "/api/v1/apps/{app}") => role == Role::Admin,
        // The deploy token in the matrix is scoped, so only admin creates apps here.
        ("POST", "/api/v1/apps") => role == Role::Admin,
        ("GET", "/api/v1/apps" | "/api/v1/token") => true,
        // The cluster's nodes name no app: every role may read them.
        ("GET", "/api/v1/nodes") => true,
        // Signing in needs no token; a session acts as its token, so any token has one.
        ("POST", "/api/v1/sessions") | ("GET" | "DELETE", "/api/v1/session") => true,
        // A deploy token must not raise its own app's limits.
        ("PUT" | "DELETE", p) if p.ends_with("/limits") => role == Role::Admin,
        (method, p) if p.starts_with("/api/v1/apps/{app}") => {
            in_scope && (method == "GET" || role >= Role::Deploy)
        }
        (method, path) => panic!("{method} {path}: say in `allowed` who may call it"),
    }
}

fn uri(path: &str, app: &str) -> String {
    path.replace("{app}", app)
        .replace("{name}", "hello")
        .replace("{key}", "k")
        .replace("{version}", "1")
        .replace("{id}", &uuid::Uuid::nil().to_string())
}

#[tokio::test]
async fn every_route_answers_each_role_and_scope_as_the_policy_says() {
    let s = setup().await;
    for app in ["shop", "blog"] {
        let (status, _) = s
            .call(&s.token, "POST", "/api/v1/apps", Some(json!({"name": app})))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    // The admin token covers every app; the others cover `shop` only, so `blog` is out
    // of their scope.
    let deploy = s.token("deploy", Some(&["shop"])).await;
    let read = s.token("read", Some(&["shop"])).await;
    let tokens = [
        (Role::Admin, s.token.clone()),
        (Role::Deploy, deploy),
        (Role::Read, read),
    ];
    let mut checked = 0;
    // Destructive calls (deleting an app) go last, so the others meet both apps.
    let mut routes: Vec<&Route> = ROUTES
        .iter()
        .filter(|r| r.path != "/api/v1/openapi.json")
        .collect();
    routes.sort_by_key(|r| (r.method, r.path) == ("DELETE", "/api/v1/apps/{app}"));
    for route in routes {
        for (role, secret) in &tokens {
            for (app, in_scope) in [("shop", true), ("blog", false)] {
                if !route.path.contains("{app}") && !in_scope {
                    continue;
                }
                let expected = allowed(route, *role, in_scope || *role == Role::Admin);
                let target = uri(route.path, app);
                let (status, body) = s.call(secret, route.method, &target, None).await;
                let what = format!("{role:?} {} {target}: {status} {body}", route.method);
                if expected {
                    assert!(
                        ![401, 403, 405].contains(&status.as_u16()),
                        "allowed but refused: {what}"
                    );
                    let missing_route = status == StatusCode::NOT_FOUND
                        && body["error"]["message"]
                            .as_str()
                            .is_some_and(|m| m.starts_with("route"));
                    assert!(!missing_route, "not routed: {what}");
                } else {
                    assert_eq!(status, StatusCode::FORBIDDEN, "not refused: {what}");
                    assert_eq!(body["error"]["code"], "forbidden", "{what}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "{checked}");
    s.store.health.close().await;
}

#[tokio::test]
async fn a_scoped_token_gets_403_for_an_app_that_does_not_exist_and_sees_only_its_apps() {
    let s = setup().await;
    for app in ["shop", "blog"] {
        s.call(&s.token, "POST", "/api/v1/apps", Some(json!({"name": app})))
            .await;
    }
    let read = s.token("read", Some(&["shop"])).await;
    // Not 404: a scoped token cannot tell which other apps exist.
    let (status, body) = s.call(&read, "GET", "/api/v1/apps/ghost", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["error"]["message"],
        "this token does not cover app 'ghost'"
    );
    // The scope check reads the app's name as the handler does, percent-decoded.
    let (status, body) = s.call(&read, "GET", "/api/v1/apps/sh%6Fp", None).await;
    assert_eq!(
        (status, body["name"].clone()),
        (StatusCode::OK, json!("shop"))
    );
    let (status, _) = s
        .call(&read, "GET", "/api/v1/apps/bl%6Fg/scripts", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = s.call(&read, "GET", "/api/v1/apps", None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = body["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["shop"]);
    let (status, me) = s.call(&read, "GET", "/api/v1/token", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (me["role"].clone(), me["apps"].clone()),
        (json!("read"), json!(["shop"]))
    );
    assert!(me.get("token").is_none() && me.get("secret_hash").is_none());
    let (_, all) = s.call(&s.token, "GET", "/api/v1/apps", None).await;
    assert_eq!(all["apps"].as_array().map(Vec::len), Some(2));
    s.store.health.close().await;
}

#[tokio::test]
async fn only_an_admin_or_an_all_apps_deploy_token_creates_apps() {
    let s = setup().await;
    s.call(
        &s.token,
        "POST",
        "/api/v1/apps",
        Some(json!({"name": "shop"})),
    )
    .await;
    let all_deploy = s.token("deploy", None).await;
    let shop_deploy = s.token("deploy", Some(&["shop"])).await;
    let all_read = s.token("read", None).await;
    let create = |name: &str| Some(json!({ "name": name }));
    let (status, _) = s
        .call(&all_deploy, "POST", "/api/v1/apps", create("blog"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    for token in [&shop_deploy, &all_read] {
        let (status, body) = s.call(token, "POST", "/api/v1/apps", create("wiki")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    // Still nobody but an admin deletes an app or manages tokens.
    let (status, _) = s
        .call(&all_deploy, "DELETE", "/api/v1/apps/blog", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = s.call(&all_deploy, "GET", "/api/v1/tokens", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    s.store.health.close().await;
}

#[tokio::test]
async fn token_scopes_are_checked_when_created_and_listed_with_role_and_apps() {
    let s = setup().await;
    s.call(
        &s.token,
        "POST",
        "/api/v1/apps",
        Some(json!({"name": "shop"})),
    )
    .await;
    let bad = [
        json!({"name": "x", "role": "admin", "apps": ["shop"]}),
        json!({"name": "x", "role": "deploy", "apps": []}),
        json!({"name": "x", "role": "owner"}),
        json!({"name": "x", "role": "read", "apps": ["Not A Name"]}),
    ];
    for body in bad {
        let (status, answer) = s.call(&s.token, "POST", "/api/v1/tokens", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["code"], "invalid_input");
    }
    let (status, _) = s
        .call(
            &s.token,
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "x", "role": "read", "apps": ["ghost"]})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, created) = s
        .call(
            &s.token,
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "ci", "role": "deploy", "apps": ["shop", "shop"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["role"], "deploy");
    assert_eq!(created["apps"], json!(["shop"]));
    let (_, listed) = s.call(&s.token, "GET", "/api/v1/tokens", None).await;
    let tokens = listed["tokens"].as_array().expect("tokens");
    assert_eq!(tokens[0]["role"], "admin");
    assert_eq!(tokens[0]["apps"], Value::Null);
    assert_eq!(tokens[1]["role"], "deploy");
    assert_eq!(tokens[1]["apps"], json!(["shop"]));
    s.store.health.close().await;
}
