//! Every refusal of a subscription, answered as JSON before any stream starts.
use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use shared::{ErrorBody, ErrorCode, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RealtimeError {
    #[error("no app is named '{0}'")]
    UnknownApp(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("the topic '{0}' is not exposed to browsers")]
    NotExposed(String),
    #[error("only GET opens a realtime stream")]
    MethodNotAllowed,
    #[error("too many realtime streams for this app, try again later")]
    AppFull,
    #[error("too many realtime streams on this server, try again later")]
    ServerFull,
    #[error("internal error")]
    Internal(#[from] StoreError),
}

/// When a refused client should come back, in seconds.
const RETRY_AFTER_SECS: u64 = 5;

impl RealtimeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RealtimeError::UnknownApp(_) => ErrorCode::NotFound,
            RealtimeError::InvalidInput(_) => ErrorCode::InvalidInput,
            RealtimeError::Unauthorized(_) => ErrorCode::Unauthorized,
            RealtimeError::NotExposed(_) => ErrorCode::Forbidden,
            RealtimeError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            RealtimeError::AppFull => ErrorCode::TooManyRequests,
            RealtimeError::ServerFull => ErrorCode::Unavailable,
            RealtimeError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl IntoResponse for RealtimeError {
    fn into_response(self) -> Response {
        let code = self.code();
        if let RealtimeError::Internal(_) = &self {
            tracing::error!(error = ?self, "a realtime subscription failed");
        }
        let body = ErrorBody::new(code, self.to_string());
        let mut response = (code.status(), Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            RealtimeError::AppFull | RealtimeError::ServerFull => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            RealtimeError::MethodNotAllowed => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET, OPTIONS"));
            }
            _ => {}
        }
        response
    }
}
