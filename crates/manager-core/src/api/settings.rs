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
use shared::{AppName, ErrorBody, check_data_name};
use utoipa::ToSchema;

use super::names::{ConfigKey, ConfigValue, SecretName, has_nul};

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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SetConfig {
    /// Any JSON value; its strings and keys may not contain NUL.
    #[schema(value_type = ConfigValue)]
    value: Value,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SetSecret {
    /// The secret; stored encrypted and never shown again. No NUL (U+0000).
    #[schema(pattern = r"^[^\u0000]*$")]
    value: String,
}

/// No `Debug` derive: a secret's value must not reach a log line by accident.
impl std::fmt::Debug for SetSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SetSecret { value: <hidden> }")
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ConfigEntry {
    key: String,
    value: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ConfigMap {
    config: Map<String, Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SecretState {
    name: String,
    set: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SecretNames {
    secrets: Vec<String>,
}

fn check(what: &str, raw: &str) -> Result<(), ApiError> {
    check_data_name(what, raw, MAX_NAME_BYTES).map_err(|e| ApiError::InvalidInput(e.0))
}

/// Every config value of the app.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/config",
    operation_id = "list_config",
    tag = "settings",
    params(("app" = AppName, Path, description = "The app's name")),
    responses(
        (status = 200, description = "The config, by key", body = ConfigMap),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
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

/// Show one config value.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/config/{key}",
    operation_id = "get_config",
    tag = "settings",
    params(("app" = AppName, Path, description = "The app's name"), ("key" = ConfigKey, Path, description = "The config key (percent-encoded)")),
    responses(
        (status = 200, description = "The value", body = ConfigEntry),
        (status = 404, description = "No such app or key (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
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

/// Set a config value (any JSON).
#[utoipa::path(
    put,
    path = "/api/v1/apps/{app}/config/{key}",
    operation_id = "set_config",
    tag = "settings",
    params(("app" = AppName, Path, description = "The app's name"), ("key" = ConfigKey, Path, description = "The config key (percent-encoded)")),
    request_body = SetConfig,
    responses(
        (status = 200, description = "The value set", body = ConfigEntry, links(
            ("get" = (operation_id = "get_config", parameters(("app" = "$request.path.app"), ("key" = "$request.path.key")))),
            ("delete" = (operation_id = "delete_config", parameters(("app" = "$request.path.app"), ("key" = "$request.path.key")))),
        )),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
#[tracing::instrument(skip_all, fields(app = %app))]
pub(super) async fn config_set(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(KeyPath { app, key }): ApiPath<KeyPath>,
    ApiJson(body): ApiJson<SetConfig>,
) -> Result<ApiJson<ConfigEntry>, ApiError> {
    check("config key", &key)?;
    if has_nul(&body.value) {
        return Err(ApiError::InvalidInput(
            "a config value's strings and keys may not contain NUL (U+0000)".into(),
        ));
    }
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

/// Delete a config value.
#[utoipa::path(
    delete,
    path = "/api/v1/apps/{app}/config/{key}",
    operation_id = "delete_config",
    tag = "settings",
    params(("app" = AppName, Path, description = "The app's name"), ("key" = ConfigKey, Path, description = "The config key (percent-encoded)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such app or key (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
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

/// The names of the app's secrets (never their values).
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/secrets",
    operation_id = "list_secrets",
    tag = "settings",
    params(("app" = AppName, Path, description = "The app's name")),
    responses(
        (status = 200, description = "The names", body = SecretNames),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn secret_list(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
) -> Result<ApiJson<SecretNames>, ApiError> {
    require_app(&deps, &app).await?;
    let secrets = deps.store.settings.secret_names(&app).await?;
    Ok(ApiJson(SecretNames { secrets }))
}

/// Whether a secret is set.
///
/// Never its value.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/secrets/{name}",
    operation_id = "get_secret",
    tag = "settings",
    params(("app" = AppName, Path, description = "The app's name"), ("name" = SecretName, Path, description = "The secret's name (percent-encoded)")),
    responses(
        (status = 200, description = "It is set", body = SecretState),
        (status = 404, description = "No such app or secret (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
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

/// Set a secret (encrypted at rest; never returned).
#[utoipa::path(
    put,
    path = "/api/v1/apps/{app}/secrets/{name}",
    operation_id = "set_secret",
    tag = "settings",
    params(("app" = AppName, Path, description = "The app's name"), ("name" = SecretName, Path, description = "The secret's name (percent-encoded)")),
    request_body = SetSecret,
    responses(
        (status = 200, description = "It is set", body = SecretState, links(
            ("get" = (operation_id = "get_secret", parameters(("app" = "$request.path.app"), ("name" = "$request.path.name")))),
            ("delete" = (operation_id = "delete_secret", parameters(("app" = "$request.path.app"), ("name" = "$request.path.name")))),
        )),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
#[tracing::instrument(skip_all, fields(app = %app))]
pub(super) async fn secret_set(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(SecretPath { app, name }): ApiPath<SecretPath>,
    ApiJson(body): ApiJson<SetSecret>,
) -> Result<ApiJson<SecretState>, ApiError> {
    check("secret name", &name)?;
    if body.value.contains('\0') {
        return Err(ApiError::InvalidInput(
            "a secret's value may not contain NUL (U+0000)".into(),
        ));
    }
    deps.store
        .settings
        .secret_set(&app, &name, &body.value)
        .await
        .map_err(|e| ApiError::from_store(e, |_| app.to_string()))?;
    tracing::info!("secret set");
    Ok(ApiJson(SecretState { name, set: true }))
}

/// Delete a secret.
#[utoipa::path(
    delete,
    path = "/api/v1/apps/{app}/secrets/{name}",
    operation_id = "delete_secret",
    tag = "settings",
    params(("app" = AppName, Path, description = "The app's name"), ("name" = SecretName, Path, description = "The secret's name (percent-encoded)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such app or secret (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
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
