//! The only place an error code meets an HTTP status.
//!
//! Every JSON error PiCloud sends is `{"error": {"code": "...", "message": "..."}}`; the
//! message is always our own words, never a backend's error text.
use http::StatusCode;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    NotFound,
    Conflict,
    InvalidInput,
    CompileError,
    Unauthorized,
    Forbidden,
    PayloadTooLarge,
    MethodNotAllowed,
    ScriptFailed,
    Timeout,
    Unavailable,
    Internal,
    /// The client did not send its request in time (408).
    RequestTimeout,
    /// An app's rate or concurrency limit refused the request (429, with `Retry-After`).
    TooManyRequests,
    /// An `Idempotency-Key` came again with a different request (422).
    IdempotencyKeyReused,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::InvalidInput => StatusCode::BAD_REQUEST,
            ErrorCode::CompileError => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::ScriptFailed => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

/// `{"error": {"code", "message"}}`
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// For `compile_error`: where the first error is (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code,
                message: message.into(),
                line: None,
                column: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_snake_case_and_map_to_their_status() {
        let body = ErrorBody::new(ErrorCode::PayloadTooLarge, "too big");
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["error"]["code"], "payload_too_large");
        assert_eq!(
            ErrorCode::PayloadTooLarge.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(ErrorCode::CompileError.status().as_u16(), 422);
        assert_eq!(ErrorCode::Timeout.status().as_u16(), 504);
        assert_eq!(ErrorCode::RequestTimeout.status().as_u16(), 408);
        assert_eq!(ErrorCode::TooManyRequests.status().as_u16(), 429);
        assert_eq!(ErrorCode::IdempotencyKeyReused.status().as_u16(), 422);
        assert_eq!(
            serde_json::to_value(ErrorCode::IdempotencyKeyReused).unwrap(),
            "idempotency_key_reused"
        );
    }
}
