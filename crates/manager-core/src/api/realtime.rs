//! `/api/v1/apps/{app}/realtime/...`: which topics browsers may subscribe to, the origins
//! whose pages may open streams, an operator's publish, and the signing key's rotation.
//!
//! What must stay true:
//! - a topic is private until exposed here; unexposing stops new events from entering the
//!   replay buffer (and new subscriptions), not streams already open;
//! - a publish here is a script's `pubsub::publish`: it reaches the topic's triggers and,
//!   when exposed, its realtime subscribers after it commits;
//! - rotating the key makes every token signed before it fail to verify; the key itself is
//!   never shown.
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::{AppName, ChannelName, Effects, Emit};

use super::error::ApiError;
use super::extract::ApiPath;
use super::json::ApiJson;
use super::{ManagerDeps, require_app};

/// Origins one app may list for CORS.
const MAX_ORIGINS: usize = 64;
/// The longest origin.
const MAX_ORIGIN_BYTES: usize = 256;

#[derive(Debug, Deserialize)]
pub(super) struct AppPath {
    app: AppName,
}

#[derive(Debug, Deserialize)]
pub(super) struct TopicPath {
    app: AppName,
    topic: ChannelName,
}

#[derive(Debug, Serialize)]
pub(super) struct TopicView {
    topic: ChannelName,
    /// Streams naming the topic open on the node that answers.
    subscribers: usize,
}

#[derive(Debug, Serialize)]
pub(super) struct TopicList {
    topics: Vec<TopicView>,
}

#[derive(Debug, Serialize)]
pub(super) struct Exposed {
    topic: ChannelName,
    exposed: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct Published {
    topic: ChannelName,
    /// Whether realtime subscribers hear it (the topic is exposed).
    realtime: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CorsOrigins {
    origins: Vec<String>,
}

pub(super) async fn list(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
) -> Result<ApiJson<TopicList>, ApiError> {
    require_app(&deps, &app).await?;
    let counts = deps
        .realtime
        .as_ref()
        .map(|s| s.counts(&app))
        .unwrap_or_default();
    let topics = deps
        .store
        .realtime
        .topics(&app)
        .await?
        .into_iter()
        .map(|topic| {
            let subscribers = counts
                .iter()
                .find(|(t, _)| *t == topic)
                .map_or(0, |(_, n)| *n);
            TopicView { topic, subscribers }
        })
        .collect();
    Ok(ApiJson(TopicList { topics }))
}

pub(super) async fn expose(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(TopicPath { app, topic }): ApiPath<TopicPath>,
) -> Result<(StatusCode, ApiJson<Exposed>), ApiError> {
    let added = deps
        .store
        .realtime
        .expose(&app, &topic)
        .await
        .map_err(|e| ApiError::from_store(e, |_| app.to_string()))?;
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        ApiJson(Exposed {
            topic,
            exposed: true,
        }),
    ))
}

pub(super) async fn unexpose(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(TopicPath { app, topic }): ApiPath<TopicPath>,
) -> Result<StatusCode, ApiError> {
    if deps.store.realtime.unexpose(&app, &topic).await? {
        return Ok(StatusCode::NO_CONTENT);
    }
    require_app(&deps, &app).await?;
    Err(ApiError::not_found("exposed topic", topic))
}

pub(super) async fn publish(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(TopicPath { app, topic }): ApiPath<TopicPath>,
    ApiJson(payload): ApiJson<Value>,
) -> Result<(StatusCode, ApiJson<Published>), ApiError> {
    let effects = Effects {
        emitted: vec![Emit::Publish {
            topic: topic.clone(),
            payload,
        }],
        ..Effects::default()
    };
    deps.store
        .outbox
        .apply(&app, &effects)
        .await
        .map_err(|e| ApiError::from_store(e, |_| app.to_string()))?;
    let realtime = deps.store.realtime.topics(&app).await?.contains(&topic);
    Ok((StatusCode::ACCEPTED, ApiJson(Published { topic, realtime })))
}

pub(super) async fn rotate_key(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
) -> Result<StatusCode, ApiError> {
    deps.store
        .realtime
        .rotate_key(&app)
        .await
        .map_err(|e| ApiError::from_store(e, |_| app.to_string()))?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn cors_get(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
) -> Result<ApiJson<CorsOrigins>, ApiError> {
    let access = deps
        .store
        .realtime
        .access(&app)
        .await?
        .ok_or_else(|| ApiError::not_found("app", &app))?;
    Ok(ApiJson(CorsOrigins {
        origins: access.cors_origins,
    }))
}

pub(super) async fn cors_set(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
    ApiJson(body): ApiJson<CorsOrigins>,
) -> Result<ApiJson<CorsOrigins>, ApiError> {
    if body.origins.len() > MAX_ORIGINS {
        return Err(ApiError::InvalidInput(format!(
            "at most {MAX_ORIGINS} origins"
        )));
    }
    for origin in &body.origins {
        check_origin(origin)?;
    }
    deps.store
        .realtime
        .set_cors_origins(&app, &body.origins)
        .await
        .map_err(|e| ApiError::from_store(e, |_| app.to_string()))?;
    Ok(ApiJson(body))
}

/// `*`, or `scheme://host[:port]` with nothing after it.
fn check_origin(origin: &str) -> Result<(), ApiError> {
    let bad = || {
        ApiError::InvalidInput(format!(
            "an origin is '*' or scheme://host[:port], at most {MAX_ORIGIN_BYTES} bytes"
        ))
    };
    if origin == "*" {
        return Ok(());
    }
    if origin.len() > MAX_ORIGIN_BYTES || origin.chars().any(|c| c.is_control() || c == ' ') {
        return Err(bad());
    }
    let (scheme, rest) = origin.split_once("://").ok_or_else(bad)?;
    if scheme.is_empty() || rest.is_empty() || rest.contains('/') {
        return Err(bad());
    }
    Ok(())
}
