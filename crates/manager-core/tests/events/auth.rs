//! Every event and data route needs a token.
use super::*;

async fn every_new_route_needs_a_token(t: &TestApp) {
    for Route { method, path, .. } in ROUTES {
        // The document is public and signing in takes its token in the body (both checked
        // by the api binary's routes module).
        if *path == "/api/v1/openapi.json" || *path == "/api/v1/sessions" {
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

on_both_backends!(
    with_app =>
    every_new_route_needs_a_token,
);
