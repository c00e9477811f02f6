//! Route registration and the OpenAPI document.
use super::*;

async fn every_route_is_registered_and_needs_a_token_except_the_openapi_document_and_sign_in(
    t: &TestApp,
) {
    // An unregistered path answers 401 without a token too, so a 401 alone proves nothing:
    // with a token, each route must answer something an unregistered path does not.
    let unregistered = |uri: &str| format!("route '{uri}' does not exist");
    let unknown = t.call(Method::GET, "/api/v1/no-such-route", None).await;
    assert_error(&unknown, 404, "not_found");
    assert_eq!(
        unknown.body["error"]["message"],
        unregistered("/api/v1/no-such-route")
    );
    for Route { method, path, .. } in ROUTES {
        let uri = path
            .replace("{app}", "shop")
            .replace("{name}", "hello")
            .replace("{key}", "k")
            .replace("{version}", "1")
            .replace("{id}", &uuid::Uuid::nil().to_string());
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let answer = t.call_as(None, method.clone(), &uri, None).await;
        if *path == "/api/v1/openapi.json" {
            assert_eq!(answer.status, StatusCode::OK);
        } else if *path == "/api/v1/sessions" {
            // Signing in takes a token in its body instead: without one it is a bad request.
            assert_error(&answer, 400, "invalid_input");
        } else {
            assert_error(&answer, 401, "unauthorized");
        }
        let known = t.call(method.clone(), &uri, None).await;
        assert_ne!(
            known.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}"
        );
        assert_ne!(
            known.body["error"]["message"],
            unregistered(&uri),
            "{method} {uri} is not registered"
        );
    }
}

async fn the_openapi_document_is_served_and_lists_every_route(t: &TestApp) {
    let doc = t
        .call_as(None, Method::GET, "/api/v1/openapi.json", None)
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(doc.body["openapi"], "3.1.0");
    for Route { method, path, .. } in ROUTES {
        assert!(
            doc.body["paths"][path][method.to_ascii_lowercase()].is_object(),
            "{method} {path} is not documented"
        );
    }
}

on_both_backends!(
    with_app =>
    every_route_is_registered_and_needs_a_token_except_the_openapi_document_and_sign_in,
    the_openapi_document_is_served_and_lists_every_route,
);
