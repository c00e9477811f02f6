//! `/api/v1/apps/{app}/scripts`: deploy, check, list, show, versions, rollback and delete.
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
use shared::{AppName, CatalogChange, ErrorBody, ScriptName};
use utoipa::ToSchema;

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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DeployBody {
    /// The script's Rhai source; it must compile (else 422 `compile_error`). At most the
    /// server's `max_script_bytes` (256 KiB by default) of UTF-8.
    #[schema(max_length = 65536, pattern = r"^[^\u0000]*$")]
    source: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RollbackBody {
    /// An existing version of the script.
    #[schema(minimum = 1, maximum = 2147483647)]
    #[serde(deserialize_with = "super::json::integral::i64")]
    version: i64,
}

/// The answer to a deploy or a rollback: which version is now active.
#[derive(Debug, Serialize, ToSchema)]
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

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ScriptList {
    scripts: Vec<ScriptInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ScriptDetail {
    #[serde(flatten)]
    info: ScriptInfo,
    /// The source of the active version.
    source: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct VersionList {
    versions: Vec<VersionInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct VersionDetail {
    version: i64,
    created_at: DateTime<Utc>,
    active: bool,
    source: String,
}

/// Deploy a new version of a script.
///
/// The source is compiled first: a script that does not compile is refused (422) and the
/// active version keeps serving. 201 for the first version, 200 after.
#[utoipa::path(
    put,
    path = "/api/v1/apps/{app}/scripts/{name}",
    operation_id = "deploy_script",
    tag = "scripts",
    params(("app" = AppName, Path, description = "The app's name"), ("name" = ScriptName, Path, description = "The script's name")),
    request_body = DeployBody,
    responses(
        (status = 201, description = "The first version, now active", body = Deployed, links(
            ("get" = (operation_id = "get_script", parameters(("app" = "$response.body#/app"), ("name" = "$response.body#/script")))),
            ("versions" = (operation_id = "list_script_versions", parameters(("app" = "$response.body#/app"), ("name" = "$response.body#/script")))),
            ("version" = (operation_id = "get_script_version", parameters(("app" = "$response.body#/app"), ("name" = "$response.body#/script"), ("version" = "$response.body#/version")))),
            ("rollback" = (operation_id = "rollback_script", parameters(("app" = "$response.body#/app"), ("name" = "$response.body#/script")), request_body = json!({"version": "$response.body#/version"}))),
            ("limits" = (operation_id = "get_script_limits", parameters(("app" = "$response.body#/app"), ("name" = "$response.body#/script")))),
            ("set_limits" = (operation_id = "set_script_limits", parameters(("app" = "$response.body#/app"), ("name" = "$response.body#/script")))),
            ("delete" = (operation_id = "delete_script", parameters(("app" = "$response.body#/app"), ("name" = "$response.body#/script")))),
        )),
        (status = 200, description = "A new version, now active", body = Deployed, links(
            ("get" = (operation_id = "get_script", parameters(("app" = "$response.body#/app"), ("name" = "$response.body#/script")))),
            ("versions" = (operation_id = "list_script_versions", parameters(("app" = "$response.body#/app"), ("name" = "$response.body#/script")))),
            ("version" = (operation_id = "get_script_version", parameters(("app" = "$response.body#/app"), ("name" = "$response.body#/script"), ("version" = "$response.body#/version")))),
            ("rollback" = (operation_id = "rollback_script", parameters(("app" = "$response.body#/app"), ("name" = "$response.body#/script")), request_body = json!({"version": "$response.body#/version"}))),
            ("limits" = (operation_id = "get_script_limits", parameters(("app" = "$response.body#/app"), ("name" = "$response.body#/script")))),
            ("set_limits" = (operation_id = "set_script_limits", parameters(("app" = "$response.body#/app"), ("name" = "$response.body#/script")))),
            ("delete" = (operation_id = "delete_script", parameters(("app" = "$response.body#/app"), ("name" = "$response.body#/script")))),
        )),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
        (status = 413, description = "The source is larger than the server's `max_script_bytes` (`payload_too_large`)", body = ErrorBody),
        (status = 422, description = "The source does not compile (`compile_error`, with `line` and `column`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
#[tracing::instrument(skip_all, fields(app = %app, script = %name))]
pub(super) async fn deploy(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(ScriptPath { app, name }): ApiPath<ScriptPath>,
    body: Result<ApiJson<DeployBody>, ApiError>,
) -> Result<(StatusCode, ApiJson<Deployed>), ApiError> {
    let source = checked_source(&deps, body)?;
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

/// The answer to a compile check.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Checked {
    app: AppName,
    script: ScriptName,
    /// Always `true`: a source that does not compile is answered 422.
    compiles: bool,
}

/// Compile a source without storing it.
///
/// The same check a deploy makes, and nothing else: no version is made and nothing
/// changes, and the app need not exist yet (`picloud push` checks every script of a
/// folder before it creates the app or deploys anything). 422 `compile_error` with the
/// `line` and `column` when it does not compile.
#[utoipa::path(
    post,
    path = "/api/v1/apps/{app}/scripts/{name}/check",
    operation_id = "check_script",
    tag = "scripts",
    params(("app" = AppName, Path, description = "The app's name (it need not exist)"), ("name" = ScriptName, Path, description = "The script's name (it need not exist)")),
    request_body = DeployBody,
    responses(
        (status = 200, description = "The source compiles", body = Checked),
        (status = 413, description = "The source is larger than the server's `max_script_bytes` (`payload_too_large`)", body = ErrorBody),
        (status = 422, description = "The source does not compile (`compile_error`, with `line` and `column`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
pub(super) async fn check_only(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(ScriptPath { app, name }): ApiPath<ScriptPath>,
    body: Result<ApiJson<DeployBody>, ApiError>,
) -> Result<ApiJson<Checked>, ApiError> {
    let source = checked_source(&deps, body)?;
    check(&deps, source).await?;
    Ok(ApiJson(Checked {
        app,
        script: name,
        compiles: true,
    }))
}

/// The body's source within the server's `max_script_bytes`, without NUL.
fn checked_source(
    deps: &ManagerDeps,
    body: Result<ApiJson<DeployBody>, ApiError>,
) -> Result<String, ApiError> {
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
    if source.contains('\0') {
        return Err(ApiError::InvalidInput(
            "a script's source may not contain NUL (U+0000)".into(),
        ));
    }
    Ok(source)
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

/// List an app's scripts.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/scripts",
    operation_id = "list_scripts",
    tag = "scripts",
    params(("app" = AppName, Path, description = "The app's name")),
    responses(
        (status = 200, description = "The scripts, by name", body = ScriptList, links(
            ("get" = (operation_id = "get_script", parameters(("app" = "$request.path.app"), ("name" = "$response.body#/scripts/0/name")))),
        )),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn list(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
) -> Result<ApiJson<ScriptList>, ApiError> {
    require_app(&deps, &app).await?;
    let scripts = deps.store.scripts.list(&app).await?;
    Ok(ApiJson(ScriptList { scripts }))
}

/// Show a script with its active source.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/scripts/{name}",
    operation_id = "get_script",
    tag = "scripts",
    params(("app" = AppName, Path, description = "The app's name"), ("name" = ScriptName, Path, description = "The script's name")),
    responses(
        (status = 200, description = "The script", body = ScriptDetail),
        (status = 404, description = "No such app or script (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
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

/// List a script's versions, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/scripts/{name}/versions",
    operation_id = "list_script_versions",
    tag = "scripts",
    params(("app" = AppName, Path, description = "The app's name"), ("name" = ScriptName, Path, description = "The script's name")),
    responses(
        (status = 200, description = "The versions", body = VersionList),
        (status = 404, description = "No such app or script (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
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

/// Show one version with its source.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/scripts/{name}/versions/{version}",
    operation_id = "get_script_version",
    tag = "scripts",
    params(("app" = AppName, Path, description = "The app's name"), ("name" = ScriptName, Path, description = "The script's name"), ("version" = i64, Path, minimum = 1, maximum = 2147483647, description = "The version number")),
    responses(
        (status = 200, description = "The version", body = VersionDetail),
        (status = 404, description = "No such app, script or version (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
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

/// Make an earlier version active.
#[utoipa::path(
    post,
    path = "/api/v1/apps/{app}/scripts/{name}/rollback",
    operation_id = "rollback_script",
    tag = "scripts",
    params(("app" = AppName, Path, description = "The app's name"), ("name" = ScriptName, Path, description = "The script's name")),
    request_body = RollbackBody,
    responses(
        (status = 200, description = "The version now active", body = Deployed),
        (status = 404, description = "No such app, script or version (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
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

/// Delete a script with its versions and the triggers bound to it.
#[utoipa::path(
    delete,
    path = "/api/v1/apps/{app}/scripts/{name}",
    operation_id = "delete_script",
    tag = "scripts",
    params(("app" = AppName, Path, description = "The app's name"), ("name" = ScriptName, Path, description = "The script's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such app or script (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
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
