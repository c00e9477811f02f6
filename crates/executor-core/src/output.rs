//! How a script's return value becomes an HTTP response.
//!
//! A string is `text/plain`, a BLOB is its bytes (`application/octet-stream`), `()` is
//! 204, anything else (map, array, number, bool) is
//! JSON, and `response(status, body[, headers])` sets the status and headers itself.
//! Status and headers are validated when `response` is called, so a bad one is a script
//! error at the line that made it.
use std::borrow::Cow;

use bytes::Bytes;
use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map};
use shared::{FailureKind, ScriptFailure, ScriptOutput};

pub(crate) const TEXT: &str = "text/plain; charset=utf-8";
pub(crate) const JSON: &str = "application/json";
pub(crate) const BYTES: &str = "application/octet-stream";

/// What `response(...)` returns; Rhai shows it as `Response`.
#[derive(Debug, Clone)]
pub struct ScriptResponse {
    status: u16,
    /// Lowercase names, validated values.
    headers: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    body: Dynamic,
}

pub(crate) fn register(engine: &mut Engine) {
    engine.register_type_with_name::<ScriptResponse>("Response");
    engine.register_fn("response", |status: i64, body: Dynamic| {
        make_response(status, body, Map::new())
    });
    engine.register_fn("response", |status: i64, body: Dynamic, headers: Map| {
        make_response(status, body, headers)
    });
}

fn make_response(
    status: i64,
    body: Dynamic,
    headers: Map,
) -> Result<ScriptResponse, Box<EvalAltResult>> {
    let status = u16::try_from(status)
        .ok()
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| format!("response status must be 100..=599, got {status}"))?;
    let mut checked = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name '{}'", printable(&name)))?;
        let value = ImmutableString::from(crate::nesting::to_text("response: header", value)?);
        if http::HeaderValue::from_str(&value).is_err() {
            return Err(format!("invalid value for header '{name}'").into());
        }
        checked.push((name.as_str().to_owned().into(), value.to_string().into()));
    }
    Ok(ScriptResponse {
        status,
        headers: checked,
        body,
    })
}

/// A header name as it may appear in a message: without control characters, short.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// Shape a script's return value as a response.
///
/// # Errors
/// `LimitExceeded` when the body is over `max_output_bytes`; `Error` when the value
/// cannot be written as JSON.
pub(crate) fn to_output(
    value: Dynamic,
    max_output_bytes: usize,
) -> Result<ScriptOutput, ScriptFailure> {
    // A type check first: most scripts return a plain value, which a cast attempt would
    // first flatten.
    let (status, mut headers, body) = if value.is::<ScriptResponse>() {
        let resp = value.cast::<ScriptResponse>();
        (resp.status, resp.headers, resp.body)
    } else {
        (0, Vec::new(), value)
    };
    let (content_type, bytes) = encode_body(body)?;
    if bytes.len() > max_output_bytes {
        return Err(ScriptFailure {
            kind: FailureKind::LimitExceeded,
            message: format!("response body exceeds {max_output_bytes} bytes"),
        });
    }
    let status = match (status, content_type) {
        (0, None) => 204,
        (0, Some(_)) => 200,
        (s, _) => s,
    };
    if let Some(ct) = content_type
        && !headers.iter().any(|(n, _)| n == "content-type")
    {
        let header = (Cow::Borrowed("content-type"), Cow::Borrowed(ct));
        if headers.is_empty() {
            // Most answers have this one header: room for one, allocated at once.
            headers = vec![header];
        } else {
            headers.reserve_exact(1);
            headers.push(header);
        }
    }
    Ok(ScriptOutput {
        status,
        headers,
        body: bytes,
    })
}

/// A returned string as a body: its bytes are shared, not copied (a string literal's are
/// the compiled script's own).
struct Text(ImmutableString);

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The body bytes and their default content type (`None` for `()`: no body).
fn encode_body(body: Dynamic) -> Result<(Option<&'static str>, Bytes), ScriptFailure> {
    if body.is_unit() {
        return Ok((None, Bytes::new()));
    }
    if body.is_blob() {
        return Ok((Some(BYTES), Bytes::from(body.cast::<rhai::Blob>())));
    }
    if body.is_string() {
        let text = body.into_immutable_string().unwrap_or_default();
        return Ok((Some(TEXT), Bytes::from_owner(Text(text))));
    }
    if crate::nesting::too_deep(&body) {
        return Err(ScriptFailure {
            kind: FailureKind::LimitExceeded,
            message: crate::nesting::too_deep_message("the returned value"),
        });
    }
    let json = serde_json::to_vec(&body).map_err(|_| ScriptFailure {
        kind: FailureKind::Error,
        message: format!(
            "the script returned a value of type '{}' that cannot be written as JSON",
            body.type_name()
        ),
    })?;
    Ok((Some(JSON), Bytes::from(json)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(out: &'a ScriptOutput, name: &str) -> Option<&'a str> {
        out.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }

    #[test]
    fn a_string_is_plain_text_and_unit_is_no_content() {
        let out = to_output(Dynamic::from("hi"), 100).unwrap();
        assert_eq!((out.status, out.body.as_ref()), (200, b"hi".as_ref()));
        assert_eq!(header(&out, "content-type"), Some(TEXT));
        let out = to_output(Dynamic::UNIT, 100).unwrap();
        assert_eq!(out.status, 204);
        assert!(out.body.is_empty() && out.headers.is_empty());
    }

    #[test]
    fn a_blob_is_its_bytes_with_the_content_type_the_script_chose() {
        let bytes = vec![0_u8, 159, 146, 150, 255];
        let out = to_output(Dynamic::from_blob(bytes.clone()), 100).unwrap();
        assert_eq!((out.status, out.body.as_ref()), (200, bytes.as_slice()));
        assert_eq!(header(&out, "content-type"), Some(BYTES));
        let mut headers = Map::new();
        headers.insert("content-type".into(), Dynamic::from("image/png"));
        let resp = make_response(201, Dynamic::from_blob(bytes.clone()), headers).unwrap();
        let out = to_output(Dynamic::from(resp), 100).unwrap();
        assert_eq!((out.status, out.body.as_ref()), (201, bytes.as_slice()));
        assert_eq!(header(&out, "content-type"), Some("image/png"));
        let err = to_output(Dynamic::from_blob(vec![1; 11]), 10).unwrap_err();
        assert_eq!(err.kind, FailureKind::LimitExceeded);
    }

    #[test]
    fn a_returned_string_is_its_bytes_short_or_long() {
        for text in [
            String::new(),
            "hello world".into(),
            "long text ".repeat(100),
        ] {
            let out = to_output(Dynamic::from(text.clone()), 10_000).unwrap();
            assert_eq!(out.body.as_ref(), text.as_bytes());
            let shared = Dynamic::from(text.clone()).into_shared();
            let out = to_output(shared, 10_000).unwrap();
            assert_eq!(out.body.as_ref(), text.as_bytes());
        }
        // A response held in a shared value (a closure captured it) is still one.
        let resp = make_response(201, Dynamic::from("made"), Map::new()).unwrap();
        let out = to_output(Dynamic::from(resp).into_shared(), 100).unwrap();
        assert_eq!((out.status, out.body.as_ref()), (201, b"made".as_ref()));
        assert_eq!(header(&out, "content-type"), Some(TEXT));
    }

    #[test]
    fn numbers_and_booleans_are_json() {
        let out = to_output(Dynamic::from(42_i64), 100).unwrap();
        assert_eq!(out.body.as_ref(), b"42");
        assert_eq!(header(&out, "content-type"), Some(JSON));
        let out = to_output(Dynamic::TRUE, 100).unwrap();
        assert_eq!(out.body.as_ref(), b"true");
    }

    #[test]
    fn a_body_over_the_output_limit_is_a_limit_failure() {
        let err = to_output(Dynamic::from("x".repeat(11)), 10).unwrap_err();
        assert_eq!(err.kind, FailureKind::LimitExceeded);
        assert_eq!(err.message, "response body exceeds 10 bytes");
    }

    #[test]
    fn response_refuses_bad_statuses_and_header_injection() {
        assert!(make_response(99, Dynamic::UNIT, Map::new()).is_err());
        assert!(make_response(600, Dynamic::UNIT, Map::new()).is_err());
        let mut bad_value = Map::new();
        bad_value.insert("x-a".into(), Dynamic::from("a\r\nset-cookie: x=1"));
        assert!(make_response(200, Dynamic::UNIT, bad_value).is_err());
        let mut bad_name = Map::new();
        bad_name.insert("x a".into(), Dynamic::from("1"));
        assert!(make_response(200, Dynamic::UNIT, bad_name).is_err());
    }

    #[test]
    fn a_content_type_set_by_the_script_wins() {
        let mut headers = Map::new();
        headers.insert("Content-Type".into(), Dynamic::from("text/html"));
        let resp = make_response(201, Dynamic::from("<b>hi</b>"), headers).unwrap();
        let out = to_output(Dynamic::from(resp), 100).unwrap();
        assert_eq!(out.status, 201);
        assert_eq!(out.headers, [("content-type".into(), "text/html".into())]);
    }
}
