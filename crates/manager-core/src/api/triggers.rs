//! `/api/v1/apps/{app}/triggers`: bind a script to an event source: `http` (method and
//! path), `cron` (schedule and IANA time zone), `topic`, `queue` and `dead_letter`. The body
//! names its kind, so new kinds add fields, not routes.
//!
//! What must stay true: a stored cron trigger has a schedule and zone `cron::validate`
//! accepted (it fires within `cron::HORIZON_YEARS`); topic and queue names passed `ChannelName`; a queue has one consumer (409);
//! only http triggers take `idempotency`, with a TTL of 1 s to `MAX_TTL_SECS`.
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::store::{
    DEFAULT_TTL_SECS, HttpMethod, Idempotency, MAX_TTL_SECS, NewTrigger, Trigger, TriggerOptions,
    TriggerSpec,
};
use shared::{AppName, CatalogChange, ChannelName, ErrorBody, RoutePath, ScriptName, TriggerId};
use utoipa::ToSchema;
use utoipa::openapi::{RefOr, Schema};

use super::error::ApiError;
use super::extract::ApiPath;
use super::json::ApiJson;
use super::{ManagerDeps, require_app};

/// The time zone of a cron trigger that names none.
const DEFAULT_TIMEZONE: &str = "UTC";
const DEFAULT_MAX_ATTEMPTS: i64 = 5;
const MAX_ATTEMPTS_RANGE: std::ops::RangeInclusive<i64> = 1..=100;

#[derive(Debug, Deserialize)]
pub(super) struct AppPath {
    app: AppName,
}

#[derive(Debug, Deserialize)]
pub(super) struct TriggerPath {
    app: AppName,
    id: TriggerId,
}

/// Raw strings, validated one by one in `into_new_trigger` so each mistake gets its own
/// message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTrigger {
    kind: String,
    method: Option<String>,
    path: Option<String>,
    schedule: Option<String>,
    timezone: Option<String>,
    topic: Option<String>,
    queue: Option<String>,
    script: String,
    #[serde(default, deserialize_with = "super::json::integral::opt_i64")]
    max_attempts: Option<i64>,
    /// Http only: replay the answer to a repeated `Idempotency-Key`.
    idempotency: Option<IdempotencyBody>,
}

/// `"idempotency": {}` (24 hours) or `{"ttl_secs": n}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IdempotencyBody {
    #[serde(default, deserialize_with = "super::json::integral::opt_i64")]
    ttl_secs: Option<i64>,
}

impl IdempotencyBody {
    fn validate(&self) -> Result<Idempotency, ApiError> {
        let secs = self.ttl_secs.unwrap_or(i64::from(DEFAULT_TTL_SECS));
        u32::try_from(secs)
            .ok()
            .and_then(|secs| Idempotency::new(secs).ok())
            .ok_or_else(|| {
                ApiError::InvalidInput(format!(
                    "idempotency.ttl_secs must be between 1 and {MAX_TTL_SECS}"
                ))
            })
    }
}

/// The part of the cron syntax the document states as a pattern: numbers, `*` and `*/n`,
/// days 1 to 28 (so every matching schedule fires). The server takes the whole croner
/// syntax (ranges, lists, names, `L`, `W`, `#`), as the field's description says.
const CRON_PATTERN: &str = concat!(
    r"^(([1-5]?[0-9]|\*) )?(\*|\*/[1-9]|[1-5]?[0-9]) (\*|\*/[1-9]|1?[0-9]|2[0-3]) ",
    r"(\*|[1-9]|1[0-9]|2[0-8]) (\*|[1-9]|1[0-2]) (\*|[0-6])$"
);

/// The body as the document states it: one schema per kind, each with its own required
/// fields, none other accepted.
impl utoipa::PartialSchema for CreateTrigger {
    fn schema() -> RefOr<Schema> {
        let script = json!({"$ref": "#/components/schemas/ScriptName",
            "description": "The script to run; it must be deployed."});
        let max_attempts = json!({"type": "integer", "minimum": MAX_ATTEMPTS_RANGE.start(),
            "maximum": MAX_ATTEMPTS_RANGE.end(), "default": DEFAULT_MAX_ATTEMPTS,
            "description": "Event triggers: how many times an event is tried before it becomes a dead letter."});
        let zones: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect();
        let kind = |name: &str, required: &[&str], fields: serde_json::Value| {
            let mut properties = json!({
                "kind": {"type": "string", "enum": [name]},
                "script": script,
                "max_attempts": max_attempts,
            });
            if let (Some(all), serde_json::Value::Object(more)) =
                (properties.as_object_mut(), fields)
            {
                all.extend(more);
            }
            let mut needed = vec!["kind", "script"];
            needed.extend_from_slice(required);
            json!({"type": "object", "title": name, "required": needed,
                "properties": properties, "additionalProperties": false})
        };
        let schema = json!({
            "description": "A trigger to create; `kind` says which fields apply.",
            "oneOf": [
                kind("http", &["method", "path"], json!({
                    "method": {"$ref": "#/components/schemas/HttpMethod"},
                    "path": {"$ref": "#/components/schemas/RoutePath"},
                    "idempotency": {"type": "object", "additionalProperties": false,
                        "description": "Replay the stored answer to a repeated `Idempotency-Key` header (docs/admin-api.md, Idempotency keys).",
                        "properties": {"ttl_secs": {"type": "integer", "minimum": 1,
                            "maximum": MAX_TTL_SECS, "default": DEFAULT_TTL_SECS,
                            "description": "How long an answer is replayed, in seconds."}}},
                })),
                kind("cron", &["schedule"], json!({
                    "schedule": {"type": "string", "pattern": CRON_PATTERN,
                        "description": "5 fields (minute hour day month weekday) or 6 (second first), with a slot in the next 10 years. The pattern shows numbers, `*` and `*/n`; the server also takes ranges, lists, steps, names, `L`, `W` and `#` (croner)."},
                    "timezone": {"type": "string", "enum": zones, "default": DEFAULT_TIMEZONE,
                        "description": "An IANA time zone."},
                })),
                kind("topic", &["topic"], json!({
                    "topic": {"$ref": "#/components/schemas/ChannelName"},
                })),
                kind("queue", &["queue"], json!({
                    "queue": {"$ref": "#/components/schemas/ChannelName",
                        "description": "One consumer per queue (409 for a second)."},
                })),
                kind("dead_letter", &[], json!({})),
            ]
        });
        shared::schema::raw(schema)
    }
}

impl ToSchema for CreateTrigger {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        use utoipa::PartialSchema;
        for (name, schema) in [
            (ScriptName::name(), ScriptName::schema()),
            (HttpMethod::name(), HttpMethod::schema()),
            (RoutePath::name(), RoutePath::schema()),
            (ChannelName::name(), ChannelName::schema()),
        ] {
            schemas.push((name.into_owned(), schema));
        }
    }
}

impl CreateTrigger {
    /// A field of another kind (`method` on a cron trigger) is a mistake worth naming.
    fn refuse_foreign_fields(&self) -> Result<(), ApiError> {
        let allowed: &[&str] = match self.kind.as_str() {
            "http" => &["method", "path", "idempotency"],
            "cron" => &["schedule", "timezone"],
            "topic" => &["topic"],
            "queue" => &["queue"],
            _ => &[],
        };
        let present = [
            ("method", self.method.is_some()),
            ("path", self.path.is_some()),
            ("schedule", self.schedule.is_some()),
            ("timezone", self.timezone.is_some()),
            ("topic", self.topic.is_some()),
            ("queue", self.queue.is_some()),
            ("idempotency", self.idempotency.is_some()),
        ];
        match present
            .iter()
            .find(|(name, set)| *set && !allowed.contains(name))
        {
            Some((name, _))
                if matches!(
                    self.kind.as_str(),
                    "http" | "cron" | "topic" | "queue" | "dead_letter"
                ) =>
            {
                Err(ApiError::InvalidInput(format!(
                    "field '{name}' does not apply to a {} trigger",
                    self.kind
                )))
            }
            _ => Ok(()),
        }
    }

    fn into_new_trigger(self, app: AppName) -> Result<(NewTrigger, TriggerOptions), ApiError> {
        let invalid = |e: shared::InvalidName| ApiError::InvalidInput(e.0);
        let script = ScriptName::parse(&self.script).map_err(invalid)?;
        let max_attempts = self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if !MAX_ATTEMPTS_RANGE.contains(&max_attempts) {
            return Err(ApiError::InvalidInput(format!(
                "max_attempts must be between {} and {}",
                MAX_ATTEMPTS_RANGE.start(),
                MAX_ATTEMPTS_RANGE.end()
            )));
        }
        self.refuse_foreign_fields()?;
        let options = TriggerOptions {
            idempotency: self
                .idempotency
                .as_ref()
                .map(IdempotencyBody::validate)
                .transpose()?,
        };
        let spec = match self.kind.as_str() {
            "http" => {
                let (Some(method), Some(path)) = (self.method, self.path) else {
                    return Err(ApiError::InvalidInput(
                        "an http trigger needs a method and a path".into(),
                    ));
                };
                TriggerSpec::Http {
                    method: HttpMethod::parse(&method).map_err(invalid)?,
                    path: RoutePath::parse(&path).map_err(invalid)?,
                }
            }
            "cron" => {
                let Some(schedule) = self.schedule else {
                    return Err(ApiError::InvalidInput(
                        "a cron trigger needs a schedule".into(),
                    ));
                };
                let timezone = self.timezone.unwrap_or_else(|| DEFAULT_TIMEZONE.to_owned());
                crate::cron::validate(&schedule, &timezone, Utc::now())
                    .map_err(|e| ApiError::InvalidInput(e.to_string()))?;
                TriggerSpec::Cron { schedule, timezone }
            }
            "topic" => {
                let Some(topic) = self.topic else {
                    return Err(ApiError::InvalidInput(
                        "a topic trigger needs a topic".into(),
                    ));
                };
                TriggerSpec::Topic {
                    topic: ChannelName::parse(&topic).map_err(invalid)?,
                }
            }
            "queue" => {
                let Some(queue) = self.queue else {
                    return Err(ApiError::InvalidInput(
                        "a queue trigger needs a queue".into(),
                    ));
                };
                TriggerSpec::Queue {
                    queue: ChannelName::parse(&queue).map_err(invalid)?,
                }
            }
            "dead_letter" => TriggerSpec::DeadLetter {},
            other => {
                let kind: String = other.chars().take(40).collect();
                return Err(ApiError::InvalidInput(format!(
                    "trigger kind '{kind}' is not supported"
                )));
            }
        };
        let new = NewTrigger {
            app,
            script,
            spec,
            // In range 1..=100, so the conversion cannot fail.
            max_attempts: u32::try_from(max_attempts).unwrap_or(1),
        };
        Ok((new, options))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TriggerList {
    triggers: Vec<TriggerView>,
}

/// A trigger as the API shows it: cron triggers also say when they fire next.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TriggerView {
    #[serde(flatten)]
    trigger: Trigger,
    /// Cron triggers: when it fires next.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_fire_at: Option<DateTime<Utc>>,
    /// Cron triggers: the next five fire times (UTC), computed in the trigger's zone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    next_fire_times: Vec<DateTime<Utc>>,
}

/// How many fire times a cron trigger's view lists.
const NEXT_FIRES: usize = 5;

impl TriggerView {
    fn at(trigger: Trigger, now: DateTime<Utc>) -> TriggerView {
        let mut next_fire_times = Vec::new();
        if let TriggerSpec::Cron { schedule, timezone } = &trigger.spec
            && let Ok(schedule) = crate::cron::Schedule::parse(schedule, timezone)
        {
            let mut after = now;
            while next_fire_times.len() < NEXT_FIRES {
                let Some(next) = schedule.next_after(after) else {
                    break;
                };
                next_fire_times.push(next);
                after = next;
            }
        }
        TriggerView {
            trigger,
            next_fire_at: next_fire_times.first().copied(),
            next_fire_times,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TriggerRun {
    /// The outbox event that runs the trigger's script.
    event_id: shared::EventId,
}

/// Bind a script to a trigger.
#[utoipa::path(
    post,
    path = "/api/v1/apps/{app}/triggers",
    operation_id = "create_trigger",
    tag = "triggers",
    params(("app" = AppName, Path, description = "The app's name")),
    request_body = CreateTrigger,
    responses(
        (status = 201, description = "The new trigger", body = TriggerView, links(
            ("get" = (operation_id = "get_trigger", parameters(("app" = "$response.body#/app"), ("id" = "$response.body#/id")))),
            ("delete" = (operation_id = "delete_trigger", parameters(("app" = "$response.body#/app"), ("id" = "$response.body#/id")))),
        )),
        (status = 404, description = "No such app, or the script is not deployed (`not_found`)", body = ErrorBody),
        (status = 409, description = "The app has a trigger for this method and path, or this queue (`conflict`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
#[tracing::instrument(skip_all, fields(app = %app))]
pub(super) async fn create(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
    ApiJson(body): ApiJson<CreateTrigger>,
) -> Result<(StatusCode, ApiJson<TriggerView>), ApiError> {
    let (new, options) = body.into_new_trigger(app.clone())?;
    require_app(&deps, &app).await?;
    let key = new.spec.unique_key().unwrap_or_default();
    let script = new.script.clone();
    let trigger = deps
        .store
        .triggers
        .create_with(new, options)
        .await
        .map_err(|e| match e {
            shared::StoreError::Conflict(_) => {
                ApiError::Conflict(format!("app '{app}' already has a trigger for {key}"))
            }
            e => ApiError::from_store(e, |what| match what {
                "app" => app.to_string(),
                _ => script.to_string(),
            }),
        })?;
    deps.catalog
        .publish(CatalogChange::Triggers { app: app.clone() })
        .await;
    tracing::info!(trigger = %trigger.id, "trigger created");
    Ok((
        StatusCode::CREATED,
        ApiJson(TriggerView::at(trigger, Utc::now())),
    ))
}

/// List an app's triggers, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/triggers",
    operation_id = "list_triggers",
    tag = "triggers",
    params(("app" = AppName, Path, description = "The app's name")),
    responses(
        (status = 200, description = "The triggers", body = TriggerList, links(
            ("get" = (operation_id = "get_trigger", parameters(("app" = "$request.path.app"), ("id" = "$response.body#/triggers/0/id")))),
        )),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn list(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
) -> Result<ApiJson<TriggerList>, ApiError> {
    require_app(&deps, &app).await?;
    let now = Utc::now();
    let triggers = deps.store.triggers.list(&app).await?;
    let triggers = triggers
        .into_iter()
        .map(|t| TriggerView::at(t, now))
        .collect();
    Ok(ApiJson(TriggerList { triggers }))
}

/// Show one trigger.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/triggers/{id}",
    operation_id = "get_trigger",
    tag = "triggers",
    params(("app" = AppName, Path, description = "The app's name"), ("id" = TriggerId, Path, description = "The trigger's id")),
    responses(
        (status = 200, description = "The trigger", body = TriggerView),
        (status = 404, description = "No such app or trigger (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn get(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(TriggerPath { app, id }): ApiPath<TriggerPath>,
) -> Result<ApiJson<TriggerView>, ApiError> {
    require_app(&deps, &app).await?;
    let triggers = deps.store.triggers.list(&app).await?;
    match triggers.into_iter().find(|t| t.id == id) {
        Some(trigger) => Ok(ApiJson(TriggerView::at(trigger, Utc::now()))),
        None => Err(ApiError::not_found("trigger", id)),
    }
}

/// Delete a trigger.
#[utoipa::path(
    delete,
    path = "/api/v1/apps/{app}/triggers/{id}",
    operation_id = "delete_trigger",
    tag = "triggers",
    params(("app" = AppName, Path, description = "The app's name"), ("id" = TriggerId, Path, description = "The trigger's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such app or trigger (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
#[tracing::instrument(skip_all, fields(app = %app, trigger = %id))]
pub(super) async fn delete(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(TriggerPath { app, id }): ApiPath<TriggerPath>,
) -> Result<StatusCode, ApiError> {
    require_app(&deps, &app).await?;
    deps.store
        .triggers
        .delete(&app, id)
        .await
        .map_err(|e| ApiError::from_store(e, |_| id.to_string()))?;
    deps.catalog.publish(CatalogChange::Triggers { app }).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Run a cron trigger now.
///
/// Queues one `cron` event for the trigger through the outbox, as its schedule would (the
/// payload says `"manual": true` and its `slot` is now); the schedule is not moved.
#[utoipa::path(
    post,
    path = "/api/v1/apps/{app}/triggers/{id}/run",
    operation_id = "run_trigger",
    tag = "triggers",
    params(("app" = AppName, Path, description = "The app's name"), ("id" = TriggerId, Path, description = "The trigger's id")),
    responses(
        (status = 202, description = "The event is queued", body = TriggerRun),
        (status = 409, description = "The trigger is not a cron trigger (`conflict`)", body = ErrorBody),
        (status = 404, description = "No such app or trigger (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
#[tracing::instrument(skip_all, fields(app = %app, trigger = %id))]
pub(super) async fn run(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(TriggerPath { app, id }): ApiPath<TriggerPath>,
) -> Result<(StatusCode, ApiJson<TriggerRun>), ApiError> {
    require_app(&deps, &app).await?;
    let triggers = deps.store.triggers.list(&app).await?;
    let Some(trigger) = triggers.into_iter().find(|t| t.id == id) else {
        return Err(ApiError::not_found("trigger", id));
    };
    if !matches!(trigger.spec, TriggerSpec::Cron { .. }) {
        return Err(ApiError::Conflict(format!(
            "only a cron trigger can be run now; this one is {}",
            trigger.spec.kind()
        )));
    }
    let event_id = deps
        .store
        .triggers
        .run_cron_now(&app, id)
        .await
        .map_err(|e| ApiError::from_store(e, |_| id.to_string()))?;
    tracing::info!(event = %event_id, "cron trigger run now");
    Ok((StatusCode::ACCEPTED, ApiJson(TriggerRun { event_id })))
}
