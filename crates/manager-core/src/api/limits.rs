//! `/api/v1/apps/{app}/limits` and `/api/v1/apps/{app}/scripts/{name}/limits`: the
//! limits an operator sets per app and per script over the server's `[limits]`.
//!
//! What must stay true:
//! - setting or resetting limits needs an admin token (a deploy token must not raise its
//!   own app's limits); reading them needs any token that covers the app;
//! - a PUT body holds only the fields to override and replaces what was set before;
//!   every field is checked against what the server can take (`LimitPolicy::check`), and
//!   a refused body changes nothing;
//! - a change is published on the catalog and awaited, so the answer means every cache
//!   of this node applies it.
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use shared::{
    AppLimits, AppName, CatalogChange, ErrorBody, LimitOverrides, LimitPolicy, ScriptName,
};
use utoipa::ToSchema;
use utoipa::openapi::{RefOr, Schema};

use super::error::ApiError;
use super::extract::ApiPath;
use super::json::ApiJson;
use super::{ManagerDeps, require_app};

#[derive(Debug, Deserialize)]
pub(super) struct AppPath {
    app: AppName,
}

#[derive(Debug, Deserialize)]
pub(super) struct ScriptPath {
    app: AppName,
    name: ScriptName,
}

/// An app's limits: what it set, what is in force, and what its scripts set.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AppLimitsView {
    app: AppName,
    overrides: LimitOverrides,
    effective: Effective,
    /// What each script of the app set, by script name.
    #[schema(value_type = std::collections::BTreeMap<String, LimitOverrides>)]
    scripts: std::collections::BTreeMap<ScriptName, LimitOverrides>,
}

/// A script's limits: what it set and what its runs get.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ScriptLimitsView {
    app: AppName,
    script: ScriptName,
    overrides: LimitOverrides,
    effective: Effective,
}

/// Every field, `null` for a gate that is not set (no concurrency cap, no rate).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub(super) struct Effective(Map<String, Value>);

impl utoipa::PartialSchema for Effective {
    fn schema() -> RefOr<Schema> {
        let fields: Map<String, Value> = LimitOverrides::FIELDS
            .iter()
            .map(|f| {
                (
                    (*f).to_owned(),
                    json!({"type": ["integer", "null"], "minimum": 0}),
                )
            })
            .collect();
        shared::schema::raw(json!({
            "type": "object",
            "required": LimitOverrides::FIELDS,
            "properties": fields,
            "additionalProperties": false,
            "description": "Every limit in force; max_concurrency and max_requests_per_sec are null when not limited.",
        }))
    }
}

impl ToSchema for Effective {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("EffectiveLimits")
    }
}

/// A PUT body: only the limits to override, each an integer in the server's range or
/// `null` (not set). The ranges are those of a server with the default `[limits]`.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(super) struct LimitsBody(Map<String, Value>);

impl utoipa::PartialSchema for LimitsBody {
    fn schema() -> RefOr<Schema> {
        let policy = LimitPolicy::default();
        let fields: Map<String, Value> = LimitOverrides::FIELDS
            .iter()
            .map(|&f| {
                let range = policy.range(f).unwrap_or(0..=0);
                let schema = json!({"type": ["integer", "null"], "minimum": range.start(),
                    "maximum": range.end(), "description": "null or absent: not set"});
                (f.to_owned(), schema)
            })
            .collect();
        shared::schema::raw(json!({
            "type": "object",
            "properties": fields,
            "additionalProperties": false,
            "description": "The limits to override; replaces what was set. max_operations and max_call_depth at most the server's [limits]; timeout_ms at most half the event lease. The maxima shown are a default server's.",
        }))
    }
}

impl ToSchema for LimitsBody {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("LimitsBody")
    }
}

impl From<LimitOverrides> for Effective {
    fn from(limits: LimitOverrides) -> Self {
        Effective(
            LimitOverrides::FIELDS
                .iter()
                .map(|f| ((*f).to_owned(), limits.get(f).flatten().into()))
                .collect(),
        )
    }
}

/// A PUT body: known fields only, each `null` (not set) or an integer the server takes.
fn parse(policy: &LimitPolicy, body: Map<String, Value>) -> Result<LimitOverrides, ApiError> {
    let mut limits = LimitOverrides::default();
    for (key, value) in body {
        let Some(range) = policy.range(&key) else {
            return Err(ApiError::InvalidInput(format!(
                "unknown limit '{}'; the limits are {}",
                key.chars().take(64).collect::<String>(),
                LimitOverrides::FIELDS.join(", ")
            )));
        };
        let parsed = match &value {
            Value::Null => None,
            other => match super::json::integral::as_u64(other).filter(|v| range.contains(v)) {
                Some(v) => Some(v),
                None => return Err(ApiError::InvalidInput(policy.out_of_range(&key, &range))),
            },
        };
        limits.set(&key, parsed);
    }
    Ok(limits)
}

fn app_view(policy: &LimitPolicy, app: AppName, limits: AppLimits) -> AppLimitsView {
    AppLimitsView {
        app,
        overrides: limits.app,
        effective: policy.effective(&limits, None).into(),
        scripts: limits.scripts,
    }
}

fn script_view(
    policy: &LimitPolicy,
    app: AppName,
    script: ScriptName,
    limits: &AppLimits,
) -> ScriptLimitsView {
    ScriptLimitsView {
        overrides: limits.scripts.get(&script).copied().unwrap_or_default(),
        effective: policy.effective(limits, Some(&script)).into(),
        app,
        script,
    }
}

/// `404` unless the script (and its app) exists.
async fn require_script(
    deps: &ManagerDeps,
    app: &AppName,
    script: &ScriptName,
) -> Result<(), ApiError> {
    require_app(deps, app).await?;
    match deps.store.scripts.get(app, script).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("script", script)),
    }
}

/// The app's limits.
///
/// What it set, what is in force, and what its scripts set.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/limits",
    operation_id = "get_app_limits",
    tag = "limits",
    params(("app" = AppName, Path, description = "The app's name")),
    responses(
        (status = 200, description = "The limits", body = AppLimitsView),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn app_get(
    State(deps): State<Arc<ManagerDeps>>,
    Extension(policy): Extension<Arc<LimitPolicy>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
) -> Result<ApiJson<AppLimitsView>, ApiError> {
    require_app(&deps, &app).await?;
    let limits = deps.store.limits.get(&app).await?;
    Ok(ApiJson(app_view(&policy, app, limits)))
}

/// Set the app's limits.
///
/// Only the fields to override; replaces what was set.
#[utoipa::path(
    put,
    path = "/api/v1/apps/{app}/limits",
    operation_id = "set_app_limits",
    tag = "limits",
    params(("app" = AppName, Path, description = "The app's name")),
    request_body = LimitsBody,
    responses(
        (status = 200, description = "The limits now", body = AppLimitsView),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("admin")))
)]
#[tracing::instrument(skip_all, fields(app = %app))]
pub(super) async fn app_set(
    State(deps): State<Arc<ManagerDeps>>,
    Extension(policy): Extension<Arc<LimitPolicy>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
    ApiJson(LimitsBody(body)): ApiJson<LimitsBody>,
) -> Result<ApiJson<AppLimitsView>, ApiError> {
    let overrides = parse(&policy, body)?;
    deps.store
        .limits
        .set_app(&app, &overrides)
        .await
        .map_err(|e| ApiError::from_store(e, |_| app.to_string()))?;
    changed(&deps, &app).await;
    tracing::info!(?overrides, "app limits set");
    let limits = deps.store.limits.get(&app).await?;
    Ok(ApiJson(app_view(&policy, app, limits)))
}

/// Reset the app's limits to the server's.
#[utoipa::path(
    delete,
    path = "/api/v1/apps/{app}/limits",
    operation_id = "reset_app_limits",
    tag = "limits",
    params(("app" = AppName, Path, description = "The app's name")),
    responses(
        (status = 204, description = "Reset"),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("admin")))
)]
#[tracing::instrument(skip_all, fields(app = %app))]
pub(super) async fn app_reset(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
) -> Result<StatusCode, ApiError> {
    require_app(&deps, &app).await?;
    deps.store
        .limits
        .set_app(&app, &LimitOverrides::default())
        .await?;
    changed(&deps, &app).await;
    tracing::info!("app limits reset");
    Ok(StatusCode::NO_CONTENT)
}

/// The script's limits.
///
/// What it set and what its runs get.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/scripts/{name}/limits",
    operation_id = "get_script_limits",
    tag = "limits",
    params(("app" = AppName, Path, description = "The app's name"), ("name" = ScriptName, Path, description = "The script's name")),
    responses(
        (status = 200, description = "The limits", body = ScriptLimitsView),
        (status = 404, description = "No such app or script (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn script_get(
    State(deps): State<Arc<ManagerDeps>>,
    Extension(policy): Extension<Arc<LimitPolicy>>,
    ApiPath(ScriptPath { app, name }): ApiPath<ScriptPath>,
) -> Result<ApiJson<ScriptLimitsView>, ApiError> {
    require_script(&deps, &app, &name).await?;
    let limits = deps.store.limits.get(&app).await?;
    Ok(ApiJson(script_view(&policy, app, name, &limits)))
}

/// Set the script's limits.
///
/// Only the fields to override; replaces what was set.
#[utoipa::path(
    put,
    path = "/api/v1/apps/{app}/scripts/{name}/limits",
    operation_id = "set_script_limits",
    tag = "limits",
    params(("app" = AppName, Path, description = "The app's name"), ("name" = ScriptName, Path, description = "The script's name")),
    request_body = LimitsBody,
    responses(
        (status = 200, description = "The limits now", body = ScriptLimitsView),
        (status = 404, description = "No such app or script (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("admin")))
)]
#[tracing::instrument(skip_all, fields(app = %app, script = %name))]
pub(super) async fn script_set(
    State(deps): State<Arc<ManagerDeps>>,
    Extension(policy): Extension<Arc<LimitPolicy>>,
    ApiPath(ScriptPath { app, name }): ApiPath<ScriptPath>,
    ApiJson(LimitsBody(body)): ApiJson<LimitsBody>,
) -> Result<ApiJson<ScriptLimitsView>, ApiError> {
    let overrides = parse(&policy, body)?;
    require_app(&deps, &app).await?;
    deps.store
        .limits
        .set_script(&app, &name, &overrides)
        .await
        .map_err(|e| ApiError::from_store(e, |_| name.to_string()))?;
    changed(&deps, &app).await;
    tracing::info!(?overrides, "script limits set");
    let limits = deps.store.limits.get(&app).await?;
    Ok(ApiJson(script_view(&policy, app, name, &limits)))
}

/// Reset the script's limits to its app's.
#[utoipa::path(
    delete,
    path = "/api/v1/apps/{app}/scripts/{name}/limits",
    operation_id = "reset_script_limits",
    tag = "limits",
    params(("app" = AppName, Path, description = "The app's name"), ("name" = ScriptName, Path, description = "The script's name")),
    responses(
        (status = 204, description = "Reset"),
        (status = 404, description = "No such app or script (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("admin")))
)]
#[tracing::instrument(skip_all, fields(app = %app, script = %name))]
pub(super) async fn script_reset(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(ScriptPath { app, name }): ApiPath<ScriptPath>,
) -> Result<StatusCode, ApiError> {
    require_script(&deps, &app, &name).await?;
    deps.store
        .limits
        .set_script(&app, &name, &LimitOverrides::default())
        .await?;
    changed(&deps, &app).await;
    tracing::info!("script limits reset");
    Ok(StatusCode::NO_CONTENT)
}

/// Tell every cache of this node, and wait until they apply it.
async fn changed(deps: &ManagerDeps, app: &AppName) {
    deps.catalog
        .publish(CatalogChange::Limits { app: app.clone() })
        .await;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("an object")
    }

    #[test]
    fn a_body_sets_its_fields_and_null_leaves_one_unset() {
        let policy = LimitPolicy::default();
        let parsed = parse(
            &policy,
            body(json!({"timeout_ms": 250, "max_concurrency": 2, "max_log_bytes": null})),
        )
        .unwrap();
        assert_eq!(parsed.timeout_ms, Some(250));
        assert_eq!(parsed.max_concurrency, Some(2));
        assert_eq!(parsed.max_log_bytes, None);
        assert!(parse(&policy, Map::new()).unwrap().is_empty());
    }

    #[test]
    fn a_bad_field_is_refused_in_words_that_name_it() {
        let policy = LimitPolicy::default();
        for (bad, says) in [
            (
                json!({"timeout": 1}),
                "unknown limit 'timeout'; the limits are max_operations",
            ),
            (
                json!({"timeout_ms": -1}),
                "timeout_ms must be an integer from 1 to 30000",
            ),
            (json!({"timeout_ms": 1.5}), "timeout_ms must be an integer"),
            (json!({"timeout_ms": "5"}), "timeout_ms must be an integer"),
            (json!({"max_call_depth": 1000}), "at most the server's own"),
        ] {
            let err = parse(&policy, body(bad.clone())).unwrap_err();
            assert_eq!(err.code(), shared::ErrorCode::InvalidInput);
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn the_effective_view_has_every_field_and_null_for_unset_gates() {
        let shown = Effective::from(LimitPolicy::default().defaults);
        let json = serde_json::to_value(&shown).unwrap();
        assert_eq!(json["timeout_ms"], 5_000);
        assert!(json["max_concurrency"].is_null());
        assert_eq!(
            json.as_object().unwrap().len(),
            LimitOverrides::FIELDS.len()
        );
    }
}
