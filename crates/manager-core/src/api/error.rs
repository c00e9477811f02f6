//! `ApiError`: every way an admin API call fails, and the one place it becomes a response.
//!
//! The `Display` text of a variant is the public message. Internal detail (a backend's
//! error) lives only in `#[source]` and goes to the log, never into a body.
use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use shared::{CompileError, ErrorBody, ErrorCode, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{kind} '{name}' does not exist")]
    NotFound { kind: &'static str, name: String },
    /// Our own words about the caller's input: safe to show.
    #[error("{0}")]
    InvalidInput(String),
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// The token is valid but its role or app scope does not allow the call.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("this route does not support the method {0}")]
    MethodNotAllowed(String),
    #[error(transparent)]
    Compile(CompileError),
    #[error("the service is busy, try again")]
    Unavailable,
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::NotFound { .. } => ErrorCode::NotFound,
            ApiError::InvalidInput(_) => ErrorCode::InvalidInput,
            ApiError::Unauthorized => ErrorCode::Unauthorized,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            ApiError::Compile(_) => ErrorCode::CompileError,
            ApiError::Unavailable => ErrorCode::Unavailable,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn not_found(kind: &'static str, name: impl ToString) -> Self {
        ApiError::NotFound {
            kind,
            name: name.to_string(),
        }
    }

    /// Turn a store error into an API error. `name_of` names the thing the store says is
    /// missing (`"app"`, `"script"`, ...), since only the call site knows which it was.
    pub fn from_store(e: StoreError, name_of: impl Fn(&'static str) -> String) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound {
                kind: what,
                name: name_of(what),
            },
            StoreError::Conflict(what) => {
                ApiError::Conflict(format!("{what} '{}' already exists", name_of(what)))
            }
            StoreError::Busy => ApiError::Unavailable,
            StoreError::Backend(_) => ApiError::Internal(Box::new(e)),
        }
    }
}

/// For store calls that cannot fail with `NotFound` or `Conflict` (lists, lookups).
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::from_store(e, |_| String::new())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        if code.status().is_server_error() {
            tracing::error!(error = %self, cause = ?std::error::Error::source(&self), "request failed");
        }
        let mut body = ErrorBody::new(code, self.to_string());
        if let ApiError::Compile(e) = &self {
            body.error.line = Some(e.line);
            body.error.column = Some(e.column);
        }
        let mut response = (code.status(), Json(body)).into_response();
        if matches!(self, ApiError::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_error_answers_internal_without_its_text() {
        let e = ApiError::from_store(
            StoreError::backend(std::io::Error::other("no such table: secret_sql")),
            |_| String::new(),
        );
        assert_eq!(e.code(), ErrorCode::Internal);
        assert_eq!(e.to_string(), "internal error");
    }

    #[test]
    fn a_missing_thing_is_named_in_the_message() {
        let e = ApiError::from_store(StoreError::NotFound("app"), |_| "shop".into());
        assert_eq!(e.to_string(), "app 'shop' does not exist");
        assert_eq!(e.code().status().as_u16(), 404);
    }

    #[test]
    fn a_compile_error_reads_line_and_column_first() {
        let e = ApiError::Compile(CompileError {
            line: 3,
            column: 7,
            message: "unexpected '}'".into(),
        });
        assert_eq!(e.to_string(), "line 3, column 7: unexpected '}'");
        assert_eq!(e.code().status().as_u16(), 422);
    }
}
