//! `http::get/post/put/patch/delete`: outbound HTTP from scripts, under the SSRF policy
//! of `crate::ssrf`.
//!
//! What must stay true:
//! - Every request goes through the executor's one `OutboundClient` (policy resolver,
//!   checked redirects, caps); there is no other way out of the sandbox.
//! - A script thread is not a runtime worker: the call blocks it with `rt.block_on`,
//!   never `block_in_place`.
//! - The script sees `HttpError`'s text only: no address, port or lower-level error.
//!
//! The client is the executor's (`Runner::outbound`), found through the run's host
//! context: outside an executor run, `http::*` is not available.
use std::time::Duration;

use bytes::Bytes;
use rhai::{Dynamic, EvalAltResult, ImmutableString, Map, Module};

use crate::context;
use crate::ssrf::{HttpError, OutboundClient, OutboundConfig, OutboundRequest, OutboundResponse};

/// Build an executor's client. A client that cannot be built (TLS setup) is logged and
/// leaves `http::*` answering "not available" rather than failing the executor.
pub(crate) fn client(config: &OutboundConfig) -> Option<OutboundClient> {
    match OutboundClient::new(config) {
        Ok(client) => Some(client),
        Err(error) => {
            tracing::error!(?error, "outbound HTTP is disabled");
            None
        }
    }
}

pub(super) fn module() -> Module {
    let mut m = Module::new();
    for (name, method) in [("get", http::Method::GET), ("delete", http::Method::DELETE)] {
        let plain = method.clone();
        m.set_native_fn(name, move |url: ImmutableString| {
            call(&plain, &url, Dynamic::UNIT, None)
        });
        m.set_native_fn(name, move |url: ImmutableString, opts: Map| {
            call(&method, &url, Dynamic::UNIT, Some(opts))
        });
    }
    for (name, method) in [
        ("post", http::Method::POST),
        ("put", http::Method::PUT),
        ("patch", http::Method::PATCH),
    ] {
        let plain = method.clone();
        m.set_native_fn(name, move |url: ImmutableString, body: Dynamic| {
            call(&plain, &url, body, None)
        });
        m.set_native_fn(
            name,
            move |url: ImmutableString, body: Dynamic, opts: Map| {
                call(&method, &url, body, Some(opts))
            },
        );
    }
    m
}

fn call(
    method: &http::Method,
    url: &str,
    body: Dynamic,
    opts: Option<Map>,
) -> Result<Map, Box<EvalAltResult>> {
    let mut request = OutboundRequest {
        method: method.clone(),
        url: url.to_owned(),
        body: to_body(body)?,
        ..OutboundRequest::default()
    };
    if let Some(opts) = opts {
        apply_options(&mut request, opts)?;
    }
    if let Some(left) = crate::run_state::remaining() {
        if left.is_zero() {
            return Err(HttpError::Timeout.to_string().into());
        }
        request.timeout = Some(request.timeout.map_or(left, |t| t.min(left)));
    }
    let cx = context::current("http").map_err(|_| HttpError::Unavailable.to_string())?;
    let client = cx
        .runner
        .outbound
        .as_ref()
        .ok_or_else(|| HttpError::Unavailable.to_string())?;
    let span = tracing::debug_span!("host.http.request", method = %method);
    let _entered = span.enter();
    let response = cx.block_on(client.send(request)).map_err(|error| {
        tracing::debug!(%error, outcome = error.outcome(), "outbound request failed");
        error.to_string()
    })?;
    Ok(to_result(response))
}

/// A string as text, a blob as bytes, `()` as no body, anything else as JSON.
fn to_body(body: Dynamic) -> Result<Option<(Bytes, &'static str)>, Box<EvalAltResult>> {
    if body.is_unit() {
        return Ok(None);
    }
    if body.is_string() {
        let text = body.into_string().unwrap_or_default();
        return Ok(Some((Bytes::from(text), "text/plain; charset=utf-8")));
    }
    if body.is_blob() {
        let blob = body.cast::<rhai::Blob>();
        return Ok(Some((Bytes::from(blob), "application/octet-stream")));
    }
    if crate::nesting::too_deep(&body) {
        return Err(crate::nesting::too_deep_message("http: body").into());
    }
    let json: serde_json::Value = rhai::serde::from_dynamic(&body).map_err(|_| {
        format!(
            "http: a body of type '{}' cannot be sent as JSON",
            body.type_name()
        )
    })?;
    Ok(Some((Bytes::from(json.to_string()), "application/json")))
}

/// `#{headers: #{..}, timeout: secs, max_bytes: n}`.
fn apply_options(request: &mut OutboundRequest, opts: Map) -> Result<(), Box<EvalAltResult>> {
    for (key, value) in opts {
        match key.as_str() {
            "headers" => {
                let headers = value
                    .try_cast::<Map>()
                    .ok_or("http: 'headers' must be a map")?;
                for (name, value) in headers {
                    let value = crate::nesting::to_text("http: header", value)?;
                    request.headers.push((name.to_string(), value));
                }
            }
            "timeout" => {
                let secs = value
                    .as_float()
                    .ok()
                    .or_else(|| value.as_int().ok().map(|n| n as f64))
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .ok_or("http: 'timeout' must be a positive number of seconds")?;
                request.timeout = Some(Duration::from_secs_f64(secs.min(86_400.0)));
            }
            "max_bytes" => {
                let n = value
                    .as_int()
                    .ok()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or("http: 'max_bytes' must be a non-negative integer")?;
                request.max_bytes = Some(n);
            }
            other => return Err(format!("http: unknown option '{other}'").into()),
        }
    }
    Ok(())
}

/// `#{status, headers, body, json}`: headers as a map of lowercase names (repeated
/// names joined with ", "), the body as lossy UTF-8, `json` parsed or `()`.
fn to_result(response: OutboundResponse) -> Map {
    let mut headers = Map::new();
    for (name, value) in response.headers {
        let entry = headers
            .entry(name.into())
            .or_insert_with(|| Dynamic::from(String::new()));
        let mut joined = entry.to_string();
        if !joined.is_empty() {
            joined.push_str(", ");
        }
        joined.push_str(&value);
        *entry = Dynamic::from(joined);
    }
    let json = serde_json::from_slice::<serde_json::Value>(&response.body)
        .ok()
        .and_then(|v| rhai::serde::to_dynamic(v).ok())
        .unwrap_or(Dynamic::UNIT);
    let mut result = Map::new();
    result.insert("status".into(), Dynamic::from(i64::from(response.status)));
    result.insert("headers".into(), Dynamic::from(headers));
    result.insert(
        "body".into(),
        Dynamic::from(String::from_utf8_lossy(&response.body).into_owned()),
    );
    result.insert("json".into(), json);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_sent_as_text_bytes_or_json_by_their_type() {
        let (text, ct) = to_body(Dynamic::from("hi".to_owned())).unwrap().unwrap();
        assert_eq!(
            (text.as_ref(), ct),
            (&b"hi"[..], "text/plain; charset=utf-8")
        );
        let (bytes, ct) = to_body(Dynamic::from_blob(vec![0, 255])).unwrap().unwrap();
        assert_eq!(
            (bytes.as_ref(), ct),
            (&[0u8, 255][..], "application/octet-stream")
        );
        let mut map = Map::new();
        map.insert("a".into(), Dynamic::from(1_i64));
        let (json, ct) = to_body(Dynamic::from(map)).unwrap().unwrap();
        assert_eq!(
            (json.as_ref(), ct),
            (&br#"{"a":1}"#[..], "application/json")
        );
        assert!(to_body(Dynamic::UNIT).unwrap().is_none());
    }

    #[test]
    fn options_can_only_be_what_the_api_documents() {
        let mut request = OutboundRequest::default();
        let mut opts = Map::new();
        opts.insert("timeout".into(), Dynamic::from(1.5_f64));
        opts.insert("max_bytes".into(), Dynamic::from(10_i64));
        apply_options(&mut request, opts).unwrap();
        assert_eq!(request.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(request.max_bytes, Some(10));

        let mut bad = Map::new();
        bad.insert("max_bytes".into(), Dynamic::from(-1_i64));
        let err = apply_options(&mut request, bad).unwrap_err().to_string();
        assert!(err.contains("'max_bytes' must be"), "{err}");

        let mut unknown = Map::new();
        unknown.insert("proxy".into(), Dynamic::from("x".to_owned()));
        let err = apply_options(&mut request, unknown)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown option 'proxy'"), "{err}");
    }

    #[test]
    fn the_result_joins_repeated_headers_and_parses_json_when_it_can() {
        let result = to_result(OutboundResponse {
            status: 201,
            headers: vec![
                ("set-cookie".into(), "a=1".into()),
                ("set-cookie".into(), "b=2".into()),
            ],
            body: Bytes::from_static(br#"{"ok":true}"#),
        });
        assert_eq!(result["status"].as_int().unwrap(), 201);
        let headers = result["headers"].clone().cast::<Map>();
        assert_eq!(headers["set-cookie"].to_string(), "a=1, b=2");
        let json = result["json"].clone().cast::<Map>();
        assert!(json["ok"].as_bool().unwrap());

        let text = to_result(OutboundResponse {
            status: 200,
            headers: vec![],
            body: Bytes::from_static(b"not json"),
        });
        assert!(text["json"].is_unit());
        assert_eq!(text["body"].to_string(), "not json");
    }
}
