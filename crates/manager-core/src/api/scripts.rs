//! `/api/v1/apps/{app}/scripts`: deploy, list, show, versions, rollback and delete.
//!
//! A deploy compiles the source before it is stored, so a script that does not compile
//! never becomes a version and the active one keeps serving. Every deploy is a new
//! immutable version; rollback only moves the active pointer.
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::store::{ScriptInfo, ScriptVersion, VersionInfo};
use shared::{AppName, CatalogChange, ScriptName};

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

#[derive(Debug, Deserialize)]
pub(super) struct VersionPath {
    app: AppName,
    name: ScriptName,
    version: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeployBody {
    source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RollbackBody {
    version: i64,
}

/// The answer to a deploy or a rollback: which version is now active.
#[derive(Debug, Serialize)]
pub(super) struct Deployed {
    app: AppName,
    script: ScriptName,
    version: i64,
    created_at: DateTime<Utc>,
}

impl From<ScriptVersion> for Deployed {
    fn from(v: ScriptVersion) -> Self {
        Deployed {
            app: v.app,
            script: v.script,
            version: v.version,
            created_at: v.created_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub(super) struct ScriptList {
    scripts: Vec<ScriptInfo>,
}

#[derive(Debug, Serialize)]
pub(super) struct ScriptDetail {
    #[serde(flatten)]
    info: ScriptInfo,
    /// The source of the active version.
    source: String,
}

#[derive(Debug, Serialize)]
pub(super) struct VersionList {
    versions: Vec<VersionInfo>,
}

#[derive(Debug, Serialize)]
pub(super) struct VersionDetail {
    version: i64,
    created_at: DateTime<Utc>,
    active: bool,
    source: String,
}

#[tracing::instrument(skip_all, fields(app = %app, script = %name))]
pub(super) async fn deploy(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(ScriptPath { app, name }): ApiPath<ScriptPath>,
    body: Result<ApiJson<DeployBody>, ApiError>,
) -> Result<(StatusCode, ApiJson<Deployed>), ApiError> {
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "a script may have at most {} bytes",
            deps.max_script_bytes
        ))
    };
    let source = match body {
        Ok(ApiJson(body)) => body.source,
        Err(ApiError::PayloadTooLarge(_)) => return Err(too_large()),
        Err(e) => return Err(e),
    };
    if source.len() > deps.max_script_bytes {
        return Err(too_large());
    }
    require_app(&deps, &app).await?;
    let source = check(&deps, source).await?;
    let version = deps
        .store
        .scripts
        .deploy(&app, &name, &source)
        .await
        .map_err(|e| ApiError::from_store(e, |_| app.to_string()))?;
    deps.catalog
        .publish(CatalogChange::Script {
            app: app.clone(),
            script: name.clone(),
        })
        .await;
    tracing::info!(version = version.version, "deployed");
    let status = if version.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, ApiJson(version.into())))
}

/// Compile on a blocking thread: a large script can take milliseconds, which would stall
/// a runtime worker. Hands the source back for storing.
async fn check(deps: &ManagerDeps, source: String) -> Result<String, ApiError> {
    let checker = deps.checker.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let result = checker.check(&source);
        (source, result)
    })
    .await;
    match outcome {
        Ok((source, Ok(()))) => Ok(source),
        Ok((_, Err(e))) => Err(ApiError::Compile(e)),
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(join) => Err(ApiError::Internal(Box::new(join))),
    }
}

pub(super) async fn list(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
) -> Result<ApiJson<ScriptList>, ApiError> {
    require_app(&deps, &app).await?;
    let scripts = deps.store.scripts.list(&app).await?;
    Ok(ApiJson(ScriptList { scripts }))
}

pub(super) async fn get(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(ScriptPath { app, name }): ApiPath<ScriptPath>,
) -> Result<ApiJson<ScriptDetail>, ApiError> {
    let (info, active) = tokio::try_join!(
        deps.store.scripts.get(&app, &name),
        deps.store.scripts.active(&app, &name)
    )?;
    match (info, active) {
        (Some(info), Some(active)) => Ok(ApiJson(ScriptDetail {
            info,
            source: active.source,
        })),
        _ => Err(missing_script(&deps, &app, &name).await),
    }
}

pub(super) async fn versions(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(ScriptPath { app, name }): ApiPath<ScriptPath>,
) -> Result<ApiJson<VersionList>, ApiError> {
    require_app(&deps, &app).await?;
    let versions = deps
        .store
        .scripts
        .versions(&app, &name)
        .await
        .map_err(|e| ApiError::from_store(e, |_| name.to_string()))?;
    Ok(ApiJson(VersionList { versions }))
}

pub(super) async fn version(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(VersionPath { app, name, version }): ApiPath<VersionPath>,
) -> Result<ApiJson<VersionDetail>, ApiError> {
    let Some(info) = deps.store.scripts.get(&app, &name).await? else {
        return Err(missing_script(&deps, &app, &name).await);
    };
    let Some(found) = deps.store.scripts.version(&app, &name, version).await? else {
        return Err(ApiError::not_found("version", version));
    };
    Ok(ApiJson(VersionDetail {
        version: found.version,
        created_at: found.created_at,
        active: found.version == info.active_version,
        source: found.source,
    }))
}

#[tracing::instrument(skip_all, fields(app = %app, script = %name, version = body.version))]
pub(super) async fn rollback(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(ScriptPath { app, name }): ApiPath<ScriptPath>,
    ApiJson(body): ApiJson<RollbackBody>,
) -> Result<ApiJson<Deployed>, ApiError> {
    require_app(&deps, &app).await?;
    let active = deps
        .store
        .scripts
        .rollback(&app, &name, body.version)
        .await
        .map_err(|e| {
            ApiError::from_store(e, |what| match what {
                "version" => body.version.to_string(),
                "app" => app.to_string(),
                _ => name.to_string(),
            })
        })?;
    deps.catalog
        .publish(CatalogChange::Script {
            app: app.clone(),
            script: name.clone(),
        })
        .await;
    tracing::info!("rolled back");
    Ok(ApiJson(active.into()))
}

#[tracing::instrument(skip_all, fields(app = %app, script = %name))]
pub(super) async fn delete(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(ScriptPath { app, name }): ApiPath<ScriptPath>,
) -> Result<StatusCode, ApiError> {
    require_app(&deps, &app).await?;
    deps.store
        .scripts
        .delete(&app, &name)
        .await
        .map_err(|e| ApiError::from_store(e, |_| name.to_string()))?;
    deps.catalog
        .publish(CatalogChange::Script {
            app: app.clone(),
            script: name,
        })
        .await;
    deps.catalog.publish(CatalogChange::Triggers { app }).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The right 404 for a script that was not found: its app may be the missing one.
async fn missing_script(deps: &ManagerDeps, app: &AppName, name: &ScriptName) -> ApiError {
    match require_app(deps, app).await {
        Err(e) => e,
        Ok(()) => ApiError::not_found("script", name),
    }
}
