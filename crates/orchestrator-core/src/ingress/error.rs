//! Every error answer of the public ingress, as one enum.
//!
//! The `Display` text of a variant is the public message; nothing a script threw, no path,
//! SQL or address ever reaches it. Detail lives in `#[source]` and goes to the log. An
//! answer that involved a run names its invocation id, in the message and in the
//! `x-picloud-invocation-id` header, so the app's owner can look the cause up.
use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use shared::{ErrorBody, ErrorCode, ExecError, InvocationId};

/// The header that names the invocation behind an answer.
pub const INVOCATION_ID_HEADER: &str = "x-picloud-invocation-id";

/// An invocation id as the value of `INVOCATION_ID_HEADER` (its lowercase hyphenated
/// form), with one allocation: the value's own bytes. Always `Some`.
pub(super) fn invocation_id_value(id: InvocationId) -> Option<HeaderValue> {
    let text = hyphenated_lower(id.0.as_bytes());
    // SAFETY: the bytes are `0-9`, `a-f` and `-` only: UTF-8 and visible ASCII, valid in a
    // header value (debug builds check it).
    Some(unsafe { HeaderValue::from_maybe_shared_unchecked(bytes::Bytes::copy_from_slice(&text)) })
}

/// A UUID's bytes as `uuid`'s `hyphenated().encode_lower` writes them, two digits per
/// table look-up.
fn hyphenated_lower(bytes: &[u8; 16]) -> [u8; 36] {
    /// Where each byte's two digits go, around the hyphens of `8-4-4-4-12`.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut out = [b'-'; 36];
    for (&byte, at) in bytes.iter().zip(AT) {
        let [high, low] = HEX_PAIRS[usize::from(byte)];
        out[at] = high;
        out[at + 1] = low;
    }
    out
}

/// Each byte's two lowercase hex digits.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0; 2]; 256];
    let mut i = 0;
    while i < 256 {
        pairs[i] = [DIGITS[i >> 4], DIGITS[i & 0xF]];
        i += 1;
    }
    pairs
};

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("no route matches this path")]
    NotFound,
    #[error("method {method} is not allowed on this path")]
    MethodNotAllowed {
        method: String,
        /// The methods the path has, for the `Allow` header.
        allow: Vec<&'static str>,
    },
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body could not be read")]
    UnreadableBody(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the script timed out (invocation {0})")]
    Timeout(InvocationId),
    #[error("the script failed (invocation {0})")]
    ScriptFailed(InvocationId),
    #[error("the service is at capacity, try again (invocation {0})")]
    Unavailable(InvocationId),
    /// The executor process stopped during the run (cluster mode); its effects were not
    /// committed and it is being restarted.
    #[error("the executor stopped during the run, try again (invocation {0})")]
    ExecutorLost(InvocationId),
    /// The app's (or script's) request rate or concurrency limit refused the request
    /// before it ran; `Retry-After` says when to come back.
    #[error("too many requests: {reason}, try again later")]
    TooManyRequests {
        reason: String,
        retry_after_secs: u64,
    },
    /// The `Idempotency-Key` header is not a key (the text says why).
    #[error("{0}")]
    InvalidIdempotencyKey(String),
    /// The first request with this key is still running.
    #[error("a request with this Idempotency-Key is still running, try again later")]
    IdempotencyKeyInFlight,
    /// The key was used before with a different request (method, path, query or body).
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("the route's script does not exist (invocation {id})")]
    ScriptNotFound {
        id: InvocationId,
        #[source]
        source: ExecError,
    },
    #[error("internal error (invocation {id})")]
    Internal {
        id: InvocationId,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl IngressError {
    pub fn code(&self) -> ErrorCode {
        match self {
            IngressError::NotFound | IngressError::ScriptNotFound { .. } => ErrorCode::NotFound,
            IngressError::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            IngressError::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            IngressError::UnreadableBody(_) | IngressError::InvalidIdempotencyKey(_) => {
                ErrorCode::InvalidInput
            }
            IngressError::IdempotencyKeyInFlight => ErrorCode::Conflict,
            IngressError::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            IngressError::Timeout(_) => ErrorCode::Timeout,
            IngressError::ScriptFailed(_) => ErrorCode::ScriptFailed,
            IngressError::Unavailable(_) | IngressError::ExecutorLost(_) => ErrorCode::Unavailable,
            IngressError::TooManyRequests { .. } => ErrorCode::TooManyRequests,
            IngressError::Internal { .. } => ErrorCode::Internal,
        }
    }

    /// The invocation this answer is about, if a run was attempted.
    pub fn invocation_id(&self) -> Option<InvocationId> {
        match self {
            IngressError::Timeout(id)
            | IngressError::ScriptFailed(id)
            | IngressError::Unavailable(id)
            | IngressError::ExecutorLost(id)
            | IngressError::ScriptNotFound { id, .. }
            | IngressError::Internal { id, .. } => Some(*id),
            IngressError::NotFound
            | IngressError::MethodNotAllowed { .. }
            | IngressError::PayloadTooLarge { .. }
            | IngressError::UnreadableBody(_)
            | IngressError::InvalidIdempotencyKey(_)
            | IngressError::IdempotencyKeyInFlight
            | IngressError::IdempotencyKeyReused
            | IngressError::TooManyRequests { .. } => None,
        }
    }
}

impl IntoResponse for IngressError {
    fn into_response(self) -> Response {
        let code = self.code();
        match &self {
            IngressError::Internal { .. } | IngressError::ScriptNotFound { .. } => {
                tracing::error!(error = ?self, "ingress request failed");
            }
            // The script's own failure: its text is in the invocation record.
            _ if code.status().is_server_error() => {
                tracing::warn!(error = %self, "ingress request failed");
            }
            _ => {}
        }
        let body = ErrorBody::new(code, self.to_string());
        let mut response = (code.status(), Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(id) = self.invocation_id()
            && let Some(value) = invocation_id_value(id)
        {
            headers.insert(INVOCATION_ID_HEADER, value);
        }
        match &self {
            IngressError::MethodNotAllowed { allow, .. } => {
                if let Ok(value) = HeaderValue::from_str(&allow.join(", ")) {
                    headers.insert(header::ALLOW, value);
                }
            }
            IngressError::Unavailable(_)
            | IngressError::ExecutorLost(_)
            | IngressError::IdempotencyKeyInFlight => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            IngressError::TooManyRequests {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_value_is_the_ids_lowercase_hyphenated_text() {
        let mut ids = vec![
            uuid::Uuid::nil(),
            uuid::Uuid::max(),
            uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210),
            uuid::Uuid::from_u128(0x9a9a_0a0a_f0f0_0f0f_a9a9_0909_1f2e_3d4c),
        ];
        ids.extend((0..1000).map(|_| uuid::Uuid::new_v4()));
        ids.extend((0..1000).map(|_| InvocationId::new().0));
        for id in ids {
            let value = invocation_id_value(InvocationId(id)).unwrap();
            assert_eq!(value.to_str().unwrap(), id.hyphenated().to_string());
            assert_eq!(value, HeaderValue::from_str(&id.to_string()).unwrap());
        }
    }

    #[test]
    fn a_script_failure_names_the_invocation_but_nothing_else() {
        let id = InvocationId::new();
        let response = IngressError::ScriptFailed(id).into_response();
        assert_eq!(response.status().as_u16(), 500);
        assert_eq!(
            response.headers()[INVOCATION_ID_HEADER].to_str().unwrap(),
            id.to_string()
        );
    }

    #[test]
    fn internal_errors_keep_their_source_out_of_the_message() {
        let err = IngressError::Internal {
            id: InvocationId::new(),
            source: "connect to /var/lib/secret.db failed".into(),
        };
        assert!(!err.to_string().contains("secret"));
        assert_eq!(err.code(), ErrorCode::Internal);
    }

    #[test]
    fn overload_answers_503_with_retry_after() {
        let response = IngressError::Unavailable(InvocationId::new()).into_response();
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[tokio::test]
    async fn a_lost_executor_answers_503_naming_the_invocation_in_the_body_and_header() {
        let id = InvocationId::new();
        let response = IngressError::ExecutorLost(id).into_response();
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            response.headers()[INVOCATION_ID_HEADER],
            id.to_string().as_str()
        );
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.error.code, ErrorCode::Unavailable);
        assert!(
            body.error.message.contains(&id.to_string()),
            "{}",
            body.error.message
        );
    }

    #[test]
    fn too_many_requests_answers_429_with_its_retry_after_and_no_invocation() {
        let response = IngressError::TooManyRequests {
            reason: "at most 2 per second".into(),
            retry_after_secs: 3,
        }
        .into_response();
        assert_eq!(response.status().as_u16(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        assert!(response.headers().get(INVOCATION_ID_HEADER).is_none());
    }

    #[test]
    fn method_not_allowed_lists_the_allowed_methods() {
        let response = IngressError::MethodNotAllowed {
            method: "POST".into(),
            allow: vec!["GET", "HEAD"],
        }
        .into_response();
        assert_eq!(response.status().as_u16(), 405);
        assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
    }
}
