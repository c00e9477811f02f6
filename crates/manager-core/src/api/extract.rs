//! `ApiPath<T>` and `ApiQuery<T>`: path and query extractors whose rejections are our JSON
//! errors. Path parameters deserialize into validated types (`AppName`, `ScriptName`,
//! ids), so a handler never sees a name that has not passed its validation.
use axum::extract::path::ErrorKind;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Path parameters, validated.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                Err(ApiError::InvalidInput(path_message(e.into_kind())))
            }
            Err(other) => Err(ApiError::Internal(Box::new(other))),
        }
    }
}

fn path_message(kind: ErrorKind) -> String {
    let short = |v: &str| v.chars().take(80).collect::<String>();
    match kind {
        // Our names' own validation text ("app name must be a lowercase slug ...").
        ErrorKind::DeserializeError { key, message, .. } if key == "app" || key == "name" => {
            message
        }
        ErrorKind::DeserializeError { key, value, .. }
        | ErrorKind::ParseErrorAtKey { key, value, .. } => {
            format!("'{}' is not a valid {key}", short(&value))
        }
        ErrorKind::Message(message) => message,
        ErrorKind::InvalidUtf8InPathParam { key } => format!("{key} is not valid UTF-8"),
        other => format!("invalid path: {other}"),
    }
}

/// Query parameters; an unknown or malformed one is a 400.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                let text = e.body_text();
                let detail = text
                    .split_once(": ")
                    .map_or(text.as_str(), |(_, rest)| rest);
                Err(ApiError::InvalidInput(format!(
                    "invalid query parameters: {detail}"
                )))
            }
            Err(other) => Err(ApiError::InvalidInput(other.body_text())),
        }
    }
}
