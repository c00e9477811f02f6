//! `/api/v1/apps`: create, list, show and delete apps. Deleting an app deletes everything
//! it owns in one store transaction.
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shared::store::{ApiToken, App};
use shared::{AppName, CatalogChange, ErrorBody};
use utoipa::ToSchema;

use super::ManagerDeps;
use super::error::ApiError;
use super::extract::ApiPath;
use super::json::ApiJson;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateApp {
    name: AppName,
}

#[derive(Debug, Deserialize)]
pub(super) struct AppPath {
    app: AppName,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AppList {
    apps: Vec<App>,
}

/// Create an app.
#[utoipa::path(
    post,
    path = "/api/v1/apps",
    operation_id = "create_app",
    tag = "apps",
    request_body = CreateApp,
    responses(
        (status = 201, description = "The new app", body = App, links(
            ("get" = (operation_id = "get_app", parameters(("app" = "$response.body#/name")))),
            ("delete" = (operation_id = "delete_app", parameters(("app" = "$response.body#/name")))),
            ("scripts" = (operation_id = "list_scripts", parameters(("app" = "$response.body#/name")))),
            ("deploy" = (operation_id = "deploy_script", parameters(("app" = "$response.body#/name")))),
            ("triggers" = (operation_id = "list_triggers", parameters(("app" = "$response.body#/name")))),
            ("invocations" = (operation_id = "list_invocations", parameters(("app" = "$response.body#/name")))),
            ("dead_letters" = (operation_id = "list_dead_letters", parameters(("app" = "$response.body#/name")))),
            ("set_config" = (operation_id = "set_config", parameters(("app" = "$response.body#/name")))),
            ("set_secret" = (operation_id = "set_secret", parameters(("app" = "$response.body#/name")))),
            ("kv" = (operation_id = "list_kv", parameters(("app" = "$response.body#/name")))),
            ("blobs" = (operation_id = "list_blobs", parameters(("app" = "$response.body#/name")))),
            ("mailbox" = (operation_id = "list_mailbox", parameters(("app" = "$response.body#/name")))),
            ("limits" = (operation_id = "get_app_limits", parameters(("app" = "$response.body#/name")))),
            ("set_limits" = (operation_id = "set_app_limits", parameters(("app" = "$response.body#/name")))),
        )),
        (status = 409, description = "An app of that name exists (`conflict`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("create_app")))
)]
#[tracing::instrument(skip_all, fields(app = %body.name))]
pub(super) async fn create(
    State(deps): State<Arc<ManagerDeps>>,
    ApiJson(body): ApiJson<CreateApp>,
) -> Result<(StatusCode, ApiJson<App>), ApiError> {
    let app = deps
        .store
        .apps
        .create(&body.name)
        .await
        .map_err(|e| ApiError::from_store(e, |_| body.name.to_string()))?;
    deps.catalog
        .publish(CatalogChange::App {
            app: app.name.clone(),
        })
        .await;
    Ok((StatusCode::CREATED, ApiJson(app)))
}

/// List apps.
///
/// Every app the calling token covers.
#[utoipa::path(
    get,
    path = "/api/v1/apps",
    operation_id = "list_apps",
    tag = "apps",
    responses((status = 200, description = "The apps, by name", body = AppList, links(
        ("get" = (operation_id = "get_app", parameters(("app" = "$response.body#/apps/0/name")))),
    ))),
    extensions(("x-picloud-access" = json!("any_token")))
)]
pub(super) async fn list(
    State(deps): State<Arc<ManagerDeps>>,
    Extension(token): Extension<ApiToken>,
) -> Result<ApiJson<AppList>, ApiError> {
    let mut apps = deps.store.apps.list().await?;
    apps.retain(|app| token.covers(&app.name));
    Ok(ApiJson(AppList { apps }))
}

/// Show an app.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}",
    operation_id = "get_app",
    tag = "apps",
    params(("app" = AppName, Path, description = "The app's name")),
    responses(
        (status = 200, description = "The app", body = App),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn get(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
) -> Result<ApiJson<App>, ApiError> {
    let found = deps
        .store
        .apps
        .get(&app)
        .await
        .map_err(|e| ApiError::from_store(e, |_| app.to_string()))?;
    Ok(ApiJson(found))
}

/// Delete an app with its scripts, triggers, history, settings and data.
#[utoipa::path(
    delete,
    path = "/api/v1/apps/{app}",
    operation_id = "delete_app",
    tag = "apps",
    params(("app" = AppName, Path, description = "The app's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("admin")))
)]
#[tracing::instrument(skip_all, fields(app = %app))]
pub(super) async fn delete(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
) -> Result<StatusCode, ApiError> {
    // The rows go with the app (ON DELETE CASCADE); the blob bytes live outside the
    // database, so note their objects first and remove them once the app is gone.
    let objects = blob_objects(&deps, &app).await?;
    deps.store
        .apps
        .delete(&app)
        .await
        .map_err(|e| ApiError::from_store(e, |_| app.to_string()))?;
    deps.catalog
        .publish(CatalogChange::App { app: app.clone() })
        .await;
    for object in objects {
        if let Err(error) = deps.store.objects.delete(&object).await {
            tracing::warn!(%app, %error, "could not remove a deleted app's blob object");
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Every object key the app's blobs point at.
async fn blob_objects(deps: &ManagerDeps, app: &shared::AppName) -> Result<Vec<String>, ApiError> {
    const PAGE: u32 = 1000;
    let mut objects = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = deps
            .store
            .blobs
            .list(app, "", after.as_deref(), PAGE)
            .await
            .map_err(|e| ApiError::from_store(e, |_| app.to_string()))?;
        let full = page.len() == PAGE as usize;
        after = page.last().map(|b| b.name.clone());
        objects.extend(page.into_iter().map(|b| b.object));
        if !full {
            return Ok(objects);
        }
    }
}
