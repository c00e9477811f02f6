//! `/api/v1/apps/{app}/config` and `/api/v1/apps/{app}/secrets`: per-app settings that
//! scripts read with `config::get` and `secrets::get`.
//!
//! What must stay true: a secret's value goes in (PUT) and never comes out. Every answer
//! about secrets carries names only, and the value is kept out of logs and spans.
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shared::{AppName, check_data_name};

use super::error::ApiError;
use super::extract::ApiPath;
use super::json::ApiJson;
use super::{ManagerDeps, require_app};

/// The longest config key or secret name, in bytes.
pub(super) const MAX_NAME_BYTES: usize = 256;

#[derive(Debug, Deserialize)]
pub(super) struct AppPath {
    app: AppName,
}

#[derive(Debug, Deserialize)]
pub(super) struct KeyPath {
    app: AppName,
    key: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct SecretPath {
    app: AppName,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetConfig {
    value: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetSecret {
    value: String,
}

/// No `Debug` derive: a secret's value must not reach a log line by accident.
impl std::fmt::Debug for SetSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SetSecret { value: <hidden> }")
    }
}

#[derive(Debug, Serialize)]
pub(super) struct ConfigEntry {
    key: String,
    value: Value,
}

#[derive(Debug, Serialize)]
pub(super) struct ConfigMap {
    config: Map<String, Value>,
}

#[derive(Debug, Serialize)]
pub(super) struct SecretState {
    name: String,
    set: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct SecretNames {
    secrets: Vec<String>,
}

fn check(what: &str, raw: &str) -> Result<(), ApiError> {
    check_data_name(what, raw, MAX_NAME_BYTES).map_err(|e| ApiError::InvalidInput(e.0))
}

pub(super) async fn config_list(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
) -> Result<ApiJson<ConfigMap>, ApiError> {
    require_app(&deps, &app).await?;
    let config = deps.store.settings.config_list(&app).await?;
    Ok(ApiJson(ConfigMap {
        config: config.into_iter().collect(),
    }))
}

pub(super) async fn config_get(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(KeyPath { app, key }): ApiPath<KeyPath>,
) -> Result<ApiJson<ConfigEntry>, ApiError> {
    check("config key", &key)?;
    match deps.store.settings.config_get(&app, &key).await? {
        Some(value) => Ok(ApiJson(ConfigEntry { key, value })),
        None => {
            require_app(&deps, &app).await?;
            Err(ApiError::not_found("config key", key))
        }
    }
}

#[tracing::instrument(skip_all, fields(app = %app))]
pub(super) async fn config_set(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(KeyPath { app, key }): ApiPath<KeyPath>,
    ApiJson(body): ApiJson<SetConfig>,
) -> Result<ApiJson<ConfigEntry>, ApiError> {
    check("config key", &key)?;
    deps.store
        .settings
        .config_set(&app, &key, &body.value)
        .await
        .map_err(|e| ApiError::from_store(e, |_| app.to_string()))?;
    Ok(ApiJson(ConfigEntry {
        key,
        value: body.value,
    }))
}

#[tracing::instrument(skip_all, fields(app = %app))]
pub(super) async fn config_delete(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(KeyPath { app, key }): ApiPath<KeyPath>,
) -> Result<StatusCode, ApiError> {
    check("config key", &key)?;
    require_app(&deps, &app).await?;
    if deps.store.settings.config_delete(&app, &key).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("config key", key))
    }
}

pub(super) async fn secret_list(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
) -> Result<ApiJson<SecretNames>, ApiError> {
    require_app(&deps, &app).await?;
    let secrets = deps.store.settings.secret_names(&app).await?;
    Ok(ApiJson(SecretNames { secrets }))
}

/// Whether a secret is set; never its value.
pub(super) async fn secret_get(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(SecretPath { app, name }): ApiPath<SecretPath>,
) -> Result<ApiJson<SecretState>, ApiError> {
    check("secret name", &name)?;
    require_app(&deps, &app).await?;
    let names = deps.store.settings.secret_names(&app).await?;
    if names.contains(&name) {
        Ok(ApiJson(SecretState { name, set: true }))
    } else {
        Err(ApiError::not_found("secret", name))
    }
}

#[tracing::instrument(skip_all, fields(app = %app))]
pub(super) async fn secret_set(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(SecretPath { app, name }): ApiPath<SecretPath>,
    ApiJson(body): ApiJson<SetSecret>,
) -> Result<ApiJson<SecretState>, ApiError> {
    check("secret name", &name)?;
    deps.store
        .settings
        .secret_set(&app, &name, &body.value)
        .await
        .map_err(|e| ApiError::from_store(e, |_| app.to_string()))?;
    tracing::info!("secret set");
    Ok(ApiJson(SecretState { name, set: true }))
}

#[tracing::instrument(skip_all, fields(app = %app))]
pub(super) async fn secret_delete(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(SecretPath { app, name }): ApiPath<SecretPath>,
) -> Result<StatusCode, ApiError> {
    check("secret name", &name)?;
    require_app(&deps, &app).await?;
    if deps.store.settings.secret_delete(&app, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("secret", name))
    }
}
