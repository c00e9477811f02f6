//! The dashboard's sessions through `router`, on SQLite and on PostgreSQL: signing in with
//! a token sets an HttpOnly, SameSite=Strict cookie; the cookie acts as the token; every
//! state-changing cookie request needs the session's CSRF token; signing out or revoking
//! the token ends the session on the server; bearer tokens work as before.
use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};
use testkit::admin::{AdminApp, Answer, Auth};
use testkit::{Backend, on_both_backends};

/// The one admin test app (`testkit::admin`), with this file's shortcuts.
struct TestApp(AdminApp);

impl std::ops::Deref for TestApp {
    type Target = AdminApp;

    fn deref(&self) -> &AdminApp {
        &self.0
    }
}

impl TestApp {
    async fn call(&self, auth: Auth<'_>, method: Method, uri: &str, body: Option<Value>) -> Answer {
        self.0.request(auth, method, uri, body).await
    }

    /// Signs in with `token`: the cookie's secret and the CSRF token.
    async fn sign_in(&self, token: &str) -> (String, String) {
        let answer = self
            .call(
                Auth::None,
                Method::POST,
                "/api/v1/sessions",
                Some(json!({"token": token})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        let cookie = answer.headers[header::SET_COOKIE].to_str().expect("ascii");
        let secret = cookie
            .strip_prefix("picloud_session=")
            .and_then(|rest| rest.split(';').next())
            .expect("the session cookie")
            .to_owned();
        let csrf = answer.body["csrf_token"].as_str().expect("csrf").to_owned();
        (secret, csrf)
    }
}

async fn signing_in_sets_an_http_only_same_site_strict_cookie_for_the_api(t: &TestApp) {
    let answer = t
        .call(
            Auth::None,
            Method::POST,
            "/api/v1/sessions",
            Some(json!({"token": t.token})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let cookie = answer.headers[header::SET_COOKIE].to_str().expect("ascii");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/api/v1", "Max-Age="] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains(&t.token), "the token is never the cookie");
    assert_eq!(answer.body["token"]["name"], "admin");
    assert_eq!(answer.body["token"]["role"], "admin");
    assert!(answer.body["expires_at"].is_string());
    let (secret, csrf) = t.sign_in(&t.token).await;
    let current = t
        .call(
            Auth::Cookie(&secret, None),
            Method::GET,
            "/api/v1/session",
            None,
        )
        .await;
    assert_eq!(current.status, StatusCode::OK);
    assert_eq!(current.body["csrf_token"], csrf.as_str());
    let apps = t
        .call(
            Auth::Cookie(&secret, None),
            Method::GET,
            "/api/v1/apps",
            None,
        )
        .await;
    assert_eq!(apps.status, StatusCode::OK, "reads need no CSRF token");
}

async fn a_wrong_token_gets_401_and_no_cookie(t: &TestApp) {
    let answer = t
        .call(
            Auth::None,
            Method::POST,
            "/api/v1/sessions",
            Some(json!({"token": "pct_wrong"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body["error"]["code"], "unauthorized");
    assert!(answer.headers.get(header::SET_COOKIE).is_none());
    let made_up = t
        .call(
            Auth::Cookie("pcs_made_up", None),
            Method::GET,
            "/api/v1/apps",
            None,
        )
        .await;
    assert_eq!(made_up.status, StatusCode::UNAUTHORIZED);
}

async fn a_state_changing_cookie_request_needs_the_sessions_csrf_token(t: &TestApp) {
    let (secret, csrf) = t.sign_in(&t.token).await;
    let (_, other_csrf) = t.sign_in(&t.token).await;
    let body = || Some(json!({"name": "shop"}));
    for bad in [None, Some(""), Some(other_csrf.as_str()), Some("0")] {
        let refused = t
            .call(
                Auth::Cookie(&secret, bad),
                Method::POST,
                "/api/v1/apps",
                body(),
            )
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{bad:?}");
        assert!(
            refused.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("X-CSRF-Token")),
            "{}",
            refused.body
        );
    }
    let missing = t
        .call(
            Auth::Bearer(&t.token),
            Method::GET,
            "/api/v1/apps/shop",
            None,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "nothing was created");
    let created = t
        .call(
            Auth::Cookie(&secret, Some(&csrf)),
            Method::POST,
            "/api/v1/apps",
            body(),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let deleted = t
        .call(
            Auth::Cookie(&secret, None),
            Method::DELETE,
            "/api/v1/apps/shop",
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::FORBIDDEN, "DELETE needs it too");
}

async fn signing_out_ends_the_session_on_the_server(t: &TestApp) {
    let (secret, csrf) = t.sign_in(&t.token).await;
    let without_csrf = t
        .call(
            Auth::Cookie(&secret, None),
            Method::DELETE,
            "/api/v1/session",
            None,
        )
        .await;
    assert_eq!(without_csrf.status, StatusCode::FORBIDDEN);
    let out = t
        .call(
            Auth::Cookie(&secret, Some(&csrf)),
            Method::DELETE,
            "/api/v1/session",
            None,
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let cleared = out.headers[header::SET_COOKIE].to_str().expect("ascii");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // The browser may keep the old cookie: it no longer works.
    let after = t
        .call(
            Auth::Cookie(&secret, None),
            Method::GET,
            "/api/v1/apps",
            None,
        )
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
}

async fn revoking_the_token_ends_its_sessions_and_a_session_keeps_its_tokens_role(t: &TestApp) {
    let created = t
        .call(
            Auth::Bearer(&t.token),
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "viewer", "role": "read"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let viewer = created.body["token"].as_str().expect("secret").to_owned();
    let id = created.body["id"].as_str().expect("id").to_owned();
    let (secret, csrf) = t.sign_in(&viewer).await;
    let forbidden = t
        .call(
            Auth::Cookie(&secret, Some(&csrf)),
            Method::POST,
            "/api/v1/apps",
            Some(json!({"name": "shop"})),
        )
        .await;
    assert_eq!(
        forbidden.status,
        StatusCode::FORBIDDEN,
        "a read token's session reads only"
    );
    let revoked = t
        .call(
            Auth::Bearer(&t.token),
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let after = t
        .call(
            Auth::Cookie(&secret, None),
            Method::GET,
            "/api/v1/apps",
            None,
        )
        .await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
}

async fn bearer_calls_need_no_csrf_token_and_have_no_session(t: &TestApp) {
    let created = t
        .call(
            Auth::Bearer(&t.token),
            Method::POST,
            "/api/v1/apps",
            Some(json!({"name": "shop"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let session = t
        .call(Auth::Bearer(&t.token), Method::GET, "/api/v1/session", None)
        .await;
    assert_eq!(session.status, StatusCode::NOT_FOUND);
    let none = t
        .call(Auth::None, Method::GET, "/api/v1/session", None)
        .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
}

/// Run `test` on a fresh server on `backend`, then close it.
async fn with_app(backend: Backend, test: impl AsyncFnOnce(&TestApp)) {
    let t = TestApp(AdminApp::start(backend).await);
    test(&t).await;
    t.0.close().await;
}

on_both_backends!(
    with_app =>
    signing_in_sets_an_http_only_same_site_strict_cookie_for_the_api,
    a_wrong_token_gets_401_and_no_cookie,
    a_state_changing_cookie_request_needs_the_sessions_csrf_token,
    signing_out_ends_the_session_on_the_server,
    revoking_the_token_ends_its_sessions_and_a_session_keeps_its_tokens_role,
    bearer_calls_need_no_csrf_token_and_have_no_session,
);
