//! `ApiJson<T>`: `axum::Json` whose rejections are our JSON errors, so malformed JSON, a
//! missing or unknown field, a wrong content type or an oversized body all answer with
//! `{"error": {...}}` like every other failure.
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

/// A JSON body in, or a JSON answer out.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    /// Every body the API takes is a JSON object: anything else is refused as such, before
    /// serde (which would take an array for a struct) sees it.
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::InvalidInput(
                "expected a JSON body with 'Content-Type: application/json'".into(),
            ));
        }
        let bytes = match Bytes::from_request(req, state).await {
            Ok(bytes) => bytes,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::PayloadTooLarge(
                    "the request body is too large".into(),
                ));
            }
            Err(_) => {
                return Err(ApiError::InvalidInput(
                    "the request body could not be read".into(),
                ));
            }
        };
        let starts_an_object = bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{');
        if !starts_an_object && let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
            return Err(ApiError::InvalidInput(format!(
                "invalid request body: expected a JSON object, got {}",
                kind(&value)
            )));
        }
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(rejection_to_error(&rejection)),
        }
    }
}

/// `application/json` or `application/<anything>+json`, parameters allowed.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "true or false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

fn rejection_to_error(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            ApiError::InvalidInput(format!("invalid request body: {}", plain(&e.body_text())))
        }
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::InvalidInput(format!("malformed JSON: {}", plain(&e.body_text())))
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::InvalidInput(
            "expected a JSON body with 'Content-Type: application/json'".into(),
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("the request body is too large".into())
        }
        _ => ApiError::InvalidInput("the request body could not be read".into()),
    }
}

/// serde's words about a body, in ours: axum's leading sentence goes, a field path is
/// kept, and Rust's type names become JSON's (`expected struct DeployBody` says "expected
/// a JSON object"; `invalid type: integer` says "got a number"). Messages we wrote
/// ourselves (a name's rules) pass through.
pub(super) fn plain(text: &str) -> String {
    // axum: "Failed to deserialize the JSON body into the target type: <path>: <serde>".
    let text = text.split_once(": ").map_or(text, |(_, rest)| rest);
    let text = text.split(" at line ").next().unwrap_or(text);
    let (path, message) = match text.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') && !path.is_empty() => (Some(path), rest),
        _ => (None, text),
    };
    let message = if let Some(rest) = message.strip_prefix("invalid type: ") {
        match rest.rsplit_once(", expected ") {
            Some((got, want)) => format!("expected {}, got {}", expected(want), got_words(got)),
            None => format!("wrong type: {rest}"),
        }
    } else if let Some(rest) = message.strip_prefix("invalid value: ") {
        match rest.rsplit_once(", expected ") {
            Some((got, want)) => format!("expected {}, got {}", expected(want), got_words(got)),
            None => format!("wrong value: {rest}"),
        }
    } else if let Some(rest) = message.strip_prefix("invalid length ") {
        match rest.split_once(", expected ") {
            Some((len, want)) => format!("expected {}, got {len} items", expected(want)),
            None => format!("wrong length {rest}"),
        }
    } else {
        message.to_owned()
    };
    match path {
        Some(path) if path != "." => format!("{path}: {message}"),
        _ => message,
    }
}

/// What serde says it expected, in JSON's words.
fn expected(want: &str) -> String {
    let want = want.trim();
    let words = match want {
        w if w.starts_with("struct ") || w.starts_with("internally tagged enum") => "a JSON object",
        "a map" | "map" => "a JSON object",
        "a sequence" | "sequence" => "an array",
        "a string" | "a borrowed string" | "string" => "a string",
        "a boolean" | "bool" => "true or false",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer",
        "f32" | "f64" => "a number",
        w if w.starts_with("enum ") => "one of the documented values",
        w if w.starts_with("tuple struct ") || w.starts_with("a tuple") => "an array",
        "unit" => "null",
        other => return other.to_owned(),
    };
    words.to_owned()
}

/// What serde says it got, in JSON's words.
fn got_words(got: &str) -> String {
    let got = got.trim();
    match got {
        "map" => "an object".into(),
        "sequence" => "an array".into(),
        "null" | "unit value" => "null".into(),
        g if g.starts_with("integer ") || g.starts_with("floating point ") => {
            let value = g.rsplit_once(' ').map_or("", |(_, v)| v).trim_matches('`');
            format!("the number {value}")
        }
        g if g.starts_with("boolean ") => g.replace('`', "").replace("boolean", "the value"),
        other => match other.strip_prefix("string ") {
            Some(text) => format!("the string {text}"),
            None => other.replace('`', "'"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::plain;

    #[test]
    fn an_integral_float_is_an_integer() {
        use super::integral;
        #[derive(serde::Deserialize)]
        struct V {
            #[serde(deserialize_with = "integral::i64")]
            v: i64,
        }
        let v: V = serde_json::from_str(r#"{"v": 3.0}"#).unwrap();
        assert_eq!(v.v, 3);
        assert!(serde_json::from_str::<V>(r#"{"v": 3.5}"#).is_err());
        assert_eq!(
            integral::as_u64(&serde_json::json!(1863341.0)),
            Some(1_863_341)
        );
        assert_eq!(integral::as_u64(&serde_json::json!(-1.0)), None);
        assert_eq!(
            plain(
                "Failed to deserialize the JSON body into the target type: x: invalid type: floating point `1.5`, expected i64 at line 1 column 2"
            ),
            "x: expected an integer, got the number 1.5"
        );
    }

    #[test]
    fn serde_words_become_plain_ones_without_rust_type_names() {
        for (raw, said) in [
            (
                "Failed to deserialize the JSON body into the target type: invalid type: string \"x\", expected struct DeployBody at line 1 column 3",
                "expected a JSON object, got the string \"x\"",
            ),
            (
                "Failed to deserialize the JSON body into the target type: source: invalid type: integer `1`, expected a string at line 1 column 12",
                "source: expected a string, got the number 1",
            ),
            (
                "Failed to deserialize the JSON body into the target type: version: invalid value: integer `-1`, expected u32 at line 1 column 5",
                "version: expected a non-negative integer, got the number -1",
            ),
            (
                "Failed to deserialize the JSON body into the target type: invalid type: sequence, expected a map at line 1 column 0",
                "expected a JSON object, got an array",
            ),
            (
                "Failed to deserialize the JSON body into the target type: missing field `source` at line 1 column 2",
                "missing field `source`",
            ),
            (
                "Failed to deserialize the JSON body into the target type: name: app name must be a lowercase slug: 1 to 63 of a-z at line 1 column 9",
                "name: app name must be a lowercase slug: 1 to 63 of a-z",
            ),
        ] {
            let out = plain(raw);
            assert_eq!(out, said, "{raw}");
            for rust in ["struct", "invalid type", "u32", "i64", "line 1"] {
                assert!(!out.contains(rust), "{out}");
            }
        }
    }
}

/// Integers as JSON Schema counts them: `1.0` is the integer 1.
pub(super) mod integral {
    use serde::{Deserialize, Deserializer, de::Error};

    /// An integer, or a number with no fraction within `i64`.
    pub(crate) fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        from_number(serde_json::Number::deserialize(d)?)
    }

    /// `Option` of [`i64`]: `null` or absent is `None`.
    pub(crate) fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Option::<serde_json::Number>::deserialize(d)?
            .map(from_number)
            .transpose()
    }

    fn from_number<E: Error>(n: serde_json::Number) -> Result<i64, E> {
        if let Some(i) = n.as_i64() {
            return Ok(i);
        }
        match n.as_f64() {
            #[allow(clippy::cast_possible_truncation)]
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
            _ => Err(E::custom(format!(
                "expected an integer, got the number {n}"
            ))),
        }
    }

    /// A JSON number as a `u64`, `1.0` included.
    pub(crate) fn as_u64(value: &serde_json::Value) -> Option<u64> {
        value.as_u64().or_else(|| {
            value
                .as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..9.0e15).contains(f))
                .map(|f| {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let n = f as u64;
                    n
                })
        })
    }
}
