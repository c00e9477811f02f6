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
use serde_json::{Value, json};
use shared::{AppName, ChannelName, Effects, Emit, ErrorBody};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use super::error::ApiError;
use super::extract::ApiPath;
use super::json::ApiJson;
use super::names::{ConfigValue, has_nul};
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

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TopicView {
    topic: ChannelName,
    /// Streams naming the topic open on the node that answers.
    subscribers: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TopicList {
    topics: Vec<TopicView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Exposed {
    topic: ChannelName,
    exposed: bool,
}

#[derive(Debug, Serialize, ToSchema)]
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

/// The body as the document states it: at most `MAX_ORIGINS` origins, each `*` or
/// `scheme://host[:port]` (printable ASCII, at most `MAX_ORIGIN_BYTES` bytes).
impl PartialSchema for CorsOrigins {
    fn schema() -> RefOr<Schema> {
        shared::schema::raw(json!({
            "type": "object",
            "required": ["origins"],
            "additionalProperties": false,
            "properties": {
                "origins": {
                    "type": "array",
                    "maxItems": MAX_ORIGINS,
                    "items": {
                        "type": "string",
                        "maxLength": MAX_ORIGIN_BYTES,
                        "pattern": r"^(\*|[A-Za-z][A-Za-z0-9+.-]*://[!-.0-~]+)$",
                        "description": "`*` (any origin), or `scheme://host[:port]` with nothing after it.",
                    },
                    "description": "The origins whose pages may open streams; empty is none.",
                },
            },
        }))
    }
}

impl ToSchema for CorsOrigins {}

/// An operator's publish (a body is always an object, so the payload is a field).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PublishBody {
    /// The payload, as a script's `pubsub::publish` takes it: any JSON whose strings and
    /// keys have no NUL.
    #[schema(value_type = ConfigValue)]
    payload: Value,
}

/// List the exposed topics.
///
/// Each with the number of streams naming it open on the node that answers.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/realtime/topics",
    operation_id = "list_realtime_topics",
    tag = "realtime",
    params(("app" = AppName, Path, description = "The app's name")),
    responses(
        (status = 200, description = "The exposed topics", body = TopicList),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
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

/// Expose a topic to browsers.
///
/// Its publishes from now on reach realtime subscribers; exposing it again changes nothing.
#[utoipa::path(
    put,
    path = "/api/v1/apps/{app}/realtime/topics/{topic}",
    operation_id = "expose_realtime_topic",
    tag = "realtime",
    params(("app" = AppName, Path, description = "The app's name"), ("topic" = ChannelName, Path, description = "The topic")),
    responses(
        (status = 201, description = "The topic is now exposed", body = Exposed, links(
            ("unexpose" = (operation_id = "unexpose_realtime_topic", parameters(("app" = "$request.path.app"), ("topic" = "$request.path.topic")))),
        )),
        (status = 200, description = "The topic was already exposed", body = Exposed),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
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

/// Stop exposing a topic.
///
/// New events no longer enter its replay buffer and new subscriptions are refused;
/// streams already open stay open.
#[utoipa::path(
    delete,
    path = "/api/v1/apps/{app}/realtime/topics/{topic}",
    operation_id = "unexpose_realtime_topic",
    tag = "realtime",
    params(("app" = AppName, Path, description = "The app's name"), ("topic" = ChannelName, Path, description = "The topic")),
    responses(
        (status = 204, description = "The topic is no longer exposed"),
        (status = 404, description = "No such app, or the topic is not exposed (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
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

/// Publish on a topic, as a script's `pubsub::publish` does.
///
/// The body's `payload` is the event's payload. It reaches the topic's triggers and, when the topic is
/// exposed, its realtime subscribers.
#[utoipa::path(
    post,
    path = "/api/v1/apps/{app}/realtime/topics/{topic}/publish",
    operation_id = "publish_realtime_topic",
    tag = "realtime",
    params(("app" = AppName, Path, description = "The app's name"), ("topic" = ChannelName, Path, description = "The topic")),
    request_body = PublishBody,
    responses(
        (status = 202, description = "Published (committed)", body = Published),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
pub(super) async fn publish(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(TopicPath { app, topic }): ApiPath<TopicPath>,
    ApiJson(PublishBody { payload }): ApiJson<PublishBody>,
) -> Result<(StatusCode, ApiJson<Published>), ApiError> {
    if has_nul(&payload) {
        return Err(ApiError::InvalidInput(
            "a payload's strings and keys may not contain NUL (U+0000)".into(),
        ));
    }
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

/// Rotate the app's signing key for realtime tokens.
///
/// Every token signed before fails to verify; the key itself is never shown.
#[utoipa::path(
    post,
    path = "/api/v1/apps/{app}/realtime/rotate-key",
    operation_id = "rotate_realtime_key",
    tag = "realtime",
    params(("app" = AppName, Path, description = "The app's name")),
    responses(
        (status = 204, description = "The key is rotated"),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
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

/// Show the origins whose pages may open streams.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/realtime/cors",
    operation_id = "get_realtime_cors",
    tag = "realtime",
    params(("app" = AppName, Path, description = "The app's name")),
    responses(
        (status = 200, description = "The allowed origins", body = CorsOrigins),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
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

/// Set the origins whose pages may open streams (replacing the list).
#[utoipa::path(
    put,
    path = "/api/v1/apps/{app}/realtime/cors",
    operation_id = "set_realtime_cors",
    tag = "realtime",
    params(("app" = AppName, Path, description = "The app's name")),
    request_body = CorsOrigins,
    responses(
        (status = 200, description = "The origins set", body = CorsOrigins, links(
            ("get" = (operation_id = "get_realtime_cors", parameters(("app" = "$request.path.app")))),
        )),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
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
