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
use serde_json::{Map, Value};
use shared::{AppLimits, AppName, CatalogChange, LimitOverrides, LimitPolicy, ScriptName};

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
#[derive(Debug, Serialize)]
pub(super) struct AppLimitsView {
    app: AppName,
    overrides: LimitOverrides,
    effective: Effective,
    scripts: std::collections::BTreeMap<ScriptName, LimitOverrides>,
}

/// A script's limits: what it set and what its runs get.
#[derive(Debug, Serialize)]
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
            other => match other.as_u64().filter(|v| range.contains(v)) {
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

pub(super) async fn app_get(
    State(deps): State<Arc<ManagerDeps>>,
    Extension(policy): Extension<Arc<LimitPolicy>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
) -> Result<ApiJson<AppLimitsView>, ApiError> {
    require_app(&deps, &app).await?;
    let limits = deps.store.limits.get(&app).await?;
    Ok(ApiJson(app_view(&policy, app, limits)))
}

#[tracing::instrument(skip_all, fields(app = %app))]
pub(super) async fn app_set(
    State(deps): State<Arc<ManagerDeps>>,
    Extension(policy): Extension<Arc<LimitPolicy>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
    ApiJson(body): ApiJson<Map<String, Value>>,
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

pub(super) async fn script_get(
    State(deps): State<Arc<ManagerDeps>>,
    Extension(policy): Extension<Arc<LimitPolicy>>,
    ApiPath(ScriptPath { app, name }): ApiPath<ScriptPath>,
) -> Result<ApiJson<ScriptLimitsView>, ApiError> {
    require_script(&deps, &app, &name).await?;
    let limits = deps.store.limits.get(&app).await?;
    Ok(ApiJson(script_view(&policy, app, name, &limits)))
}

#[tracing::instrument(skip_all, fields(app = %app, script = %name))]
pub(super) async fn script_set(
    State(deps): State<Arc<ManagerDeps>>,
    Extension(policy): Extension<Arc<LimitPolicy>>,
    ApiPath(ScriptPath { app, name }): ApiPath<ScriptPath>,
    ApiJson(body): ApiJson<Map<String, Value>>,
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
