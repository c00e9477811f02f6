//! What a script sees of the event that started it: `request` for HTTP, `event` for
//! outbox events.
//!
//! `request` is a `Request` value whose fields become Rhai values only when the script
//! reads them (most handlers read one or two, a hello world none; building the whole map
//! for every call cost about as much as running a small script). It reads like the map it
//! stands for: `request.params.id`, `request["method"]`, an unknown field is `()`, and it
//! is written as that map wherever a value becomes JSON (`Plain`). `request.to_map()`
//! gives the map itself.
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use rhai::{Array, Dynamic, Engine, Map, Scope};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use shared::{Event, EventKind, HttpRequest, InvocationInput};

/// A scope with the invocation's input pushed as a constant.
pub(crate) fn scope_for(input: InvocationInput) -> Scope<'static> {
    let mut scope = Scope::new();
    match input {
        InvocationInput::Http(req) => {
            scope.push_constant_dynamic("request", Dynamic::from(ScriptRequest::new(req)));
        }
        InvocationInput::Event(event) => {
            // `from_map`: Rhai's `From<BTreeMap>` (so `push_constant`) would collect it again.
            scope.push_constant_dynamic("event", Dynamic::from_map(event_map(&event)));
        }
    }
    scope
}

/// `event`: id, kind, topic or queue (by kind; also `source`), payload, attempt,
/// max_attempts, scheduled_at (RFC 3339).
fn event_map(event: &Event) -> Map {
    let mut map = Map::new();
    map.insert("id".into(), event.id.to_string().into());
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
    let payload = rhai::serde::to_dynamic(&event.payload).unwrap_or(Dynamic::UNIT);
    map.insert("payload".into(), payload);
    map.insert("attempt".into(), i64::from(event.attempt).into());
    map.insert("max_attempts".into(), i64::from(event.max_attempts).into());
    map.insert(
        "scheduled_at".into(),
        event
            .scheduled_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into(),
    );
    map
}

/// The fields of `request`, in the order `to_map` and `print` show them.
const REQUEST_FIELDS: [&str; 7] = [
    "method", "path", "params", "query", "headers", "body", "json",
];

/// `request` in an HTTP run: method, path, params, query, headers (lowercase names), body
/// (text, lossy UTF-8) and json (the body parsed as JSON, or `()` when it is not JSON).
#[derive(Clone)]
pub struct ScriptRequest(Arc<RequestParts>);

struct RequestParts {
    req: HttpRequest,
    /// Parsed on first read.
    json: OnceLock<Dynamic>,
}

impl ScriptRequest {
    fn new(req: HttpRequest) -> Self {
        ScriptRequest(Arc::new(RequestParts {
            req,
            json: OnceLock::new(),
        }))
    }

    /// One field as a Rhai value; `None` for a name `request` does not have.
    fn field(&self, name: &str) -> Option<Dynamic> {
        let req = &self.0.req;
        Some(match name {
            "method" => req.method.as_str().into(),
            "path" => req.path.as_str().into(),
            "params" => Dynamic::from_map(string_map(&req.params)),
            "query" => Dynamic::from_map(string_map(&req.query)),
            "headers" => Dynamic::from_map(string_map(&req.headers)),
            "body" => String::from_utf8_lossy(&req.body).as_ref().into(),
            "json" => self.0.json.get_or_init(|| json_value(&req.body)).clone(),
            _ => return None,
        })
    }

    fn to_map(&self) -> Map {
        REQUEST_FIELDS
            .iter()
            .map(|&name| (name.into(), self.field(name).unwrap_or(Dynamic::UNIT)))
            .collect()
    }
}

/// `Request` with its fields (as properties and as `request["name"]`), `to_map()` and
/// printing as the map.
pub(crate) fn register(engine: &mut Engine) {
    engine.register_type_with_name::<ScriptRequest>("Request");
    for name in REQUEST_FIELDS {
        engine.register_get(name, move |r: &mut ScriptRequest| {
            r.field(name).unwrap_or(Dynamic::UNIT)
        });
    }
    engine.register_indexer_get(|r: &mut ScriptRequest, name: &str| {
        r.field(name).unwrap_or(Dynamic::UNIT)
    });
    engine.register_fn("to_map", |r: ScriptRequest| r.to_map());
    engine.register_fn("to_string", |r: ScriptRequest| {
        Dynamic::from_map(r.to_map()).to_string()
    });
    engine.register_fn("to_debug", |r: ScriptRequest| {
        format!("{:?}", Dynamic::from_map(r.to_map()))
    });
}

/// A script value as it is written as JSON: like Rhai's own serialization, but a
/// `Request` anywhere inside is written as its map, and other values that have no JSON
/// form (functions, timestamps, other host types) are refused where Rhai would write
/// their type name.
pub(crate) struct Plain<'a>(pub(crate) &'a Dynamic);

impl Serialize for Plain<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let value = self.0;
        if let Some(req) = value.read_lock::<ScriptRequest>() {
            return Plain(&Dynamic::from_map(req.to_map())).serialize(ser);
        }
        if value.is_variant() || value.is_fnptr() || value.is_timestamp() {
            return Err(serde::ser::Error::custom(format!(
                "a value of type '{}' has no JSON form",
                value.type_name()
            )));
        }
        if value.is_map()
            && let Some(map) = value.read_lock::<Map>()
        {
            let mut out = ser.serialize_map(Some(map.len()))?;
            for (key, item) in map.iter() {
                out.serialize_entry(key.as_str(), &Plain(item))?;
            }
            return out.end();
        }
        if value.is_array()
            && let Some(items) = value.read_lock::<Array>()
        {
            let mut out = ser.serialize_seq(Some(items.len()))?;
            for item in items.iter() {
                out.serialize_element(&Plain(item))?;
            }
            return out.end();
        }
        value.serialize(ser)
    }
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
