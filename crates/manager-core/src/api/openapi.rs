//! The OpenAPI 3.1 document of the admin API, served without a token at
//! `GET /api/v1/openapi.json` and committed as `docs/openapi.json`.
//!
//! Nothing here is written by hand: each operation comes from its handler's
//! `#[utoipa::path]` (through `operations()`), each schema from the `ToSchema` types the
//! handlers take and answer. What every operation shares is added from the operation
//! itself: its access (the `x-picloud-access` extension) gives the sentence that opens its
//! description, `x-picloud-role`, `x-picloud-app-scoped`, the bearer requirement and the
//! 401 and 403 answers; parameters or a body give the 400; a body the 413; the store the
//! 500 and 503.
use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};
use shared::store::TokenRole;
use shared::{ErrorBody, ErrorCode, ErrorDetail};
use utoipa::{PartialSchema, ToSchema};

use super::{Access, Operation, operations};

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    let mut text = serde_json::to_string_pretty(&document(&operations())).expect("serializes");
    text.push('\n');
    text
});

/// The document, as served and as committed in `docs/openapi.json`.
pub fn document_text() -> &'static str {
    &DOCUMENT
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "openapi",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of the admin API", body = Object)),
    extensions(("x-picloud-access" = json!("public")))
)]
pub(super) async fn serve() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_text(),
    )
}

fn error_answer(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

/// The document of `ops`.
pub fn document(ops: &[Operation]) -> Value {
    let mut paths = Map::new();
    let mut schemas = BTreeMap::new();
    for (name, schema) in [
        (ErrorBody::name(), ErrorBody::schema()),
        (ErrorDetail::name(), ErrorDetail::schema()),
        (ErrorCode::name(), ErrorCode::schema()),
    ] {
        schemas.insert(name.into_owned(), json!(schema));
    }
    for (name, schema) in super::names::parameter_schemas() {
        schemas.insert(name, json!(schema));
    }
    for op in ops {
        for (name, schema) in &op.schemas {
            schemas.insert(name.clone(), json!(schema));
        }
        let item = paths
            .entry(op.route.path.to_owned())
            .or_insert_with(|| json!({}));
        if let (Some(item), Some(more)) = (item.as_object_mut(), op.item.as_object()) {
            for (key, value) in more {
                item.insert(key.clone(), value.clone());
            }
        }
        let operation = &mut item[op.route.method.to_ascii_lowercase()];
        shared_answers(operation, op.route.access);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "PiCloud admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Apps, scripts and versions, triggers, invocations, dead letters, config and secrets, KV, blobs, the development mailbox, limits and tokens. Generated from the handlers (utoipa); every error is the ErrorBody schema.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "An API token: `Authorization: Bearer <token>`."}},
            "schemas": schemas,
        }
    })
}

/// What an operation answers because of its access, its parameters and its body.
fn shared_answers(operation: &mut Value, access: Access) {
    let role = access.role().map_or("none", TokenRole::as_str);
    operation["x-picloud-role"] = json!(role);
    operation["x-picloud-app-scoped"] = json!(matches!(access, Access::Read | Access::Deploy));
    let sentence = access.sentence();
    operation["description"] = match operation["description"].as_str() {
        Some(own) if !own.is_empty() => json!(format!("{sentence}\n\n{own}")),
        _ => json!(sentence),
    };
    let has_input = operation
        .get("parameters")
        .is_some_and(|p| p.as_array().is_some_and(|p| !p.is_empty()))
        || operation.get("requestBody").is_some();
    let has_body = operation.get("requestBody").is_some();
    let mut add = |status: &str, description: &str| {
        let responses = &mut operation["responses"];
        if responses.get(status).is_none() {
            responses[status] = error_answer(description);
        }
    };
    if access != Access::Public {
        add("401", "No valid bearer token (`unauthorized`).");
        add(
            "403",
            "The token's role or app scope does not allow this call (`forbidden`).",
        );
        add(
            "500",
            "An internal error (`internal`); the details are in the server's log.",
        );
        add("503", "The store is busy; try again (`unavailable`).");
    }
    if has_input {
        add(
            "400",
            "A parameter or the body breaks a rule stated in this document (`invalid_input`).",
        );
    }
    if has_body {
        add("413", "The body is too large (`payload_too_large`).");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::api::ROUTES;

    fn doc() -> Value {
        serde_json::from_str(document_text()).expect("json")
    }

    fn documented(doc: &Value) -> BTreeSet<(String, String)> {
        let mut ops = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if method != "parameters" {
                    ops.insert((method.to_ascii_uppercase(), path.clone()));
                }
            }
        }
        ops
    }

    #[test]
    fn the_document_lists_exactly_the_routes_of_the_route_table() {
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_owned(), r.path.to_owned()))
            .collect();
        assert_eq!(documented(&doc()), routed);
        assert_eq!(routed.len(), ROUTES.len(), "a route is listed twice");
    }

    #[test]
    fn every_operation_states_its_access_its_id_and_its_errors() {
        let doc = doc();
        let mut ids = BTreeSet::new();
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method.to_ascii_lowercase()];
            let what = format!("{} {}", route.method, route.path);
            assert_eq!(op["x-picloud-access"], route.access.as_str(), "{what}");
            let description = op["description"].as_str().expect("description");
            assert!(description.starts_with("Needs"), "{what}: {description}");
            assert!(
                ids.insert(op["operationId"].as_str().expect("operationId").to_owned()),
                "{what}: operationId repeated"
            );
            assert!(op["summary"].is_string(), "{what}: no summary");
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{what}: no success answer"
            );
            if route.access != Access::Public {
                for status in ["401", "403", "500", "503"] {
                    assert!(responses.contains_key(status), "{what}: no {status}");
                }
            }
            let takes_input = op.get("parameters").is_some() || op.get("requestBody").is_some();
            assert_eq!(responses.contains_key("400"), takes_input, "{what}: 400");
            for (status, answer) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        answer["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{what}: {status}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_schema_reference_and_link_resolves() {
        let doc = doc();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(schemas.contains_key(&name), "missing schema {name}");
        }
        let ids: BTreeSet<&str> = doc["paths"]
            .as_object()
            .expect("paths")
            .values()
            .flat_map(|item| item.as_object().expect("item").values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        let mut links = 0;
        for item in doc["paths"].as_object().expect("paths").values() {
            for op in item.as_object().expect("item").values() {
                for answer in op["responses"]
                    .as_object()
                    .into_iter()
                    .flat_map(|r| r.values())
                {
                    for link in answer["links"]
                        .as_object()
                        .into_iter()
                        .flat_map(|l| l.values())
                    {
                        let target = link["operationId"].as_str().expect("operationId");
                        assert!(ids.contains(target), "a link to unknown {target}");
                        links += 1;
                    }
                }
            }
        }
        assert!(links >= 10, "{links} links");
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }

    #[test]
    fn every_path_parameter_is_declared() {
        let doc = doc();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("item") {
                let declared: BTreeSet<&str> = op["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter(|p| p["in"] == "path")
                            .filter_map(|p| p["name"].as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                let used: BTreeSet<&str> = path
                    .split('/')
                    .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                    .collect();
                assert_eq!(declared, used, "{method} {path}");
            }
        }
    }
}
