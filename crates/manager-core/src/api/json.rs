//! `ApiJson<T>`: `axum::Json` whose rejections are our JSON errors, so malformed JSON, a
//! missing or unknown field, a wrong content type or an oversized body all answer with
//! `{"error": {...}}` like every other failure.
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

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

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(rejection_to_error(&rejection)),
        }
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

fn rejection_to_error(rejection: &JsonRejection) -> ApiError {
    // axum's texts start with a generic sentence before ": "; keep what follows, which is
    // serde's own words about the body (never anything about the server).
    let detail = |text: String| match text.split_once(": ") {
        Some((_, rest)) => rest.to_owned(),
        None => text,
    };
    match rejection {
        JsonRejection::JsonDataError(e) => {
            ApiError::InvalidInput(format!("invalid request body: {}", detail(e.body_text())))
        }
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::InvalidInput(format!("malformed JSON: {}", detail(e.body_text())))
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
