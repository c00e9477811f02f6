//! What a script sees of the event that started it: `request` for HTTP, `event` for
//! outbox events.
use std::collections::BTreeMap;

use chrono::SecondsFormat;
use rhai::{Dynamic, Map, Scope};
use shared::{Event, EventKind, HttpRequest, InvocationInput};

/// A scope with the invocation's input pushed as constants.
///
/// Maps become `Dynamic` through `from_map`: Rhai's `From<BTreeMap>` (and so
/// `push_constant`) would collect every map again.
pub(crate) fn scope_for(input: &InvocationInput) -> Scope<'static> {
    let mut scope = Scope::new();
    match input {
        InvocationInput::Http(req) => {
            scope.push_constant_dynamic("request", Dynamic::from_map(request_map(req)));
        }
        InvocationInput::Event(event) => {
            scope.push_constant_dynamic("event", Dynamic::from_map(event_map(event)));
        }
    }
    scope
}

/// The scope of an executor run: `scope_for`, but without `request` for a script that
/// cannot read it (`may_read_request` said no when it was compiled), which then costs
/// nothing to build.
pub(crate) fn scope_of_run(input: &InvocationInput, reads_request: bool) -> Scope<'static> {
    match input {
        InvocationInput::Http(_) if !reads_request => Scope::new(),
        _ => scope_for(input),
    }
}

/// Whether a script with this source can read `request`. Rhai reaches a variable only by
/// its name written in the script (`request`, `global::request`, a closure's capture) or
/// by a name given as a string to `is_def_var` (`eval`, which could make one up, is
/// disabled), so a source that contains neither word cannot. Conservative: the word in
/// a comment or a string counts too.
pub(crate) fn may_read_request(source: &str) -> bool {
    source.contains("request") || source.contains("is_def_var")
}

/// `event`: id, kind, topic or queue (by kind; also `source`), payload, attempt,
/// max_attempts, scheduled_at (RFC 3339).
fn event_map(event: &Event) -> Map {
    let mut map = Map::new();
    let mut buf = uuid::Uuid::encode_buffer();
    let id: &str = event.id.0.hyphenated().encode_lower(&mut buf);
    map.insert("id".into(), id.into());
    map.insert("kind".into(), event.kind.as_str().into());
    let source: Dynamic = event.source.clone().map_or(Dynamic::UNIT, Into::into);
    match event.kind {
        EventKind::Topic => {
            map.insert("topic".into(), source.clone());
        }
        EventKind::Queue => {
            map.insert("queue".into(), source.clone());
        }
        _ => {}
    }
    map.insert("source".into(), source);
    map.insert("payload".into(), crate::host::from_json(&event.payload));
    map.insert("attempt".into(), i64::from(event.attempt).into());
    map.insert("max_attempts".into(), i64::from(event.max_attempts).into());
    map.insert(
        "scheduled_at".into(),
        event
            .scheduled_at
            .to_rfc3339_opts(SecondsFormat::Millis, true)
            .into(),
    );
    map
}

/// `request`: method, path, params, query, headers (lowercase names), body (text, lossy
/// UTF-8) and json (the body parsed as JSON, or `()` when it is not JSON).
///
/// Built on every HTTP run, so it is built directly: inserts into the maps (the sources
/// are already sorted), no JSON parse for an empty body.
fn request_map(req: &HttpRequest) -> Map {
    let mut map = Map::new();
    map.insert("method".into(), req.method.as_ref().into());
    map.insert("path".into(), req.path.as_str().into());
    map.insert("params".into(), Dynamic::from_map(string_map(&req.params)));
    map.insert("query".into(), Dynamic::from_map(string_map(&req.query)));
    map.insert(
        "headers".into(),
        Dynamic::from_map(
            req.headers
                .joined()
                .map(|(name, value)| (name.into(), value.as_ref().into()))
                .collect(),
        ),
    );
    map.insert(
        "body".into(),
        String::from_utf8_lossy(&req.body).as_ref().into(),
    );
    map.insert("json".into(), json_value(&req.body));
    map
}

/// The body as JSON, or `()` when it is empty or not JSON.
fn json_value(body: &[u8]) -> Dynamic {
    if body.trim_ascii().is_empty() {
        return Dynamic::UNIT;
    }
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| rhai::serde::to_dynamic(v).ok())
        .unwrap_or(Dynamic::UNIT)
}

fn string_map(src: &BTreeMap<String, String>) -> Map {
    let mut map = Map::new();
    for (k, v) in src {
        map.insert(k.as_str().into(), v.as_str().into());
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn only_a_source_that_names_request_or_asks_by_name_may_read_it() {
        for reads in [
            "request.path",
            "fn f() { global::request.method } f()",
            "let g = || request.body; g.call()",
            "// request\n1",
            r#"is_def_var("req" + "uest")"#,
        ] {
            assert!(may_read_request(reads), "{reads}");
        }
        for blind in ["\"Hello, world!\"", "let r = 1; r + 2", "kv::get(\"x\")"] {
            assert!(!may_read_request(blind), "{blind}");
        }
    }

    #[test]
    fn a_run_that_cannot_read_the_request_gets_an_empty_scope() {
        let http = InvocationInput::Http(HttpRequest::default());
        assert!(scope_of_run(&http, true).contains("request"));
        assert!(scope_of_run(&http, false).is_empty());
    }

    #[test]
    fn the_event_map_holds_the_events_fields() {
        let event = Event {
            id: shared::EventId::new(),
            app: shared::AppName::parse("shop").unwrap(),
            kind: EventKind::Queue,
            script: None,
            trigger: None,
            source: Some("jobs".into()),
            payload: serde_json::json!({"n": 3, "tags": ["a"]}),
            attempt: 2,
            max_attempts: 5,
            scheduled_at: Utc.with_ymd_and_hms(2026, 12, 4, 20, 44, 41).unwrap()
                + chrono::Duration::milliseconds(123),
            created_at: Utc::now(),
            lease: None,
            trace: None,
        };
        let map = event_map(&event);
        let text = |k: &str| map[k].clone().into_string().unwrap();
        assert_eq!(text("id"), event.id.to_string());
        assert_eq!(text("kind"), "queue");
        assert_eq!(text("queue"), "jobs");
        assert_eq!(text("source"), "jobs");
        assert!(!map.contains_key("topic"));
        assert_eq!(text("scheduled_at"), "2026-12-04T20:44:41.123Z");
        assert_eq!(map["attempt"].as_int(), Ok(2));
        assert_eq!(map["max_attempts"].as_int(), Ok(5));
        let payload = map["payload"].clone().cast::<Map>();
        assert_eq!(payload["n"].as_int(), Ok(3));
        assert_eq!(payload["tags"].clone().into_array().unwrap().len(), 1);
    }
}
