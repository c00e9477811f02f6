//! What a script sees of the event that started it: `request` for HTTP.
use std::collections::BTreeMap;

use rhai::{Dynamic, Map, Scope};
use shared::{HttpRequest, InvocationInput};

/// A scope with the invocation's input pushed as constants.
pub(crate) fn scope_for(input: &InvocationInput) -> Scope<'static> {
    let mut scope = Scope::new();
    match input {
        InvocationInput::Http(req) => {
            scope.push_constant("request", request_map(req));
        }
    }
    scope
}

/// `request`: method, path, params, query, headers (lowercase names), body (text, lossy
/// UTF-8) and json (the body parsed as JSON, or `()` when it is not JSON).
fn request_map(req: &HttpRequest) -> Map {
    let body = String::from_utf8_lossy(&req.body).into_owned();
    let json = serde_json::from_slice::<serde_json::Value>(&req.body)
        .ok()
        .and_then(|v| rhai::serde::to_dynamic(v).ok())
        .unwrap_or(Dynamic::UNIT);
    let mut map = Map::new();
    map.insert("method".into(), req.method.clone().into());
    map.insert("path".into(), req.path.clone().into());
    map.insert("params".into(), string_map(&req.params).into());
    map.insert("query".into(), string_map(&req.query).into());
    map.insert("headers".into(), string_map(&req.headers).into());
    map.insert("body".into(), body.into());
    map.insert("json".into(), json);
    map
}

fn string_map(src: &BTreeMap<String, String>) -> Map {
    src.iter()
        .map(|(k, v)| (k.as_str().into(), v.clone().into()))
        .collect()
}
