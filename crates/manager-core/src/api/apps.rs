//! `/api/v1/apps`: create, list, show and delete apps. Deleting an app deletes everything
//! it owns in one store transaction.
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shared::store::{ApiToken, App};
use shared::{AppName, CatalogChange};

use super::ManagerDeps;
use super::error::ApiError;
use super::extract::ApiPath;
use super::json::ApiJson;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateApp {
    name: AppName,
}

#[derive(Debug, Deserialize)]
pub(super) struct AppPath {
    app: AppName,
}

#[derive(Debug, Serialize)]
pub(super) struct AppList {
    apps: Vec<App>,
}

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

/// Every app the calling token covers.
pub(super) async fn list(
    State(deps): State<Arc<ManagerDeps>>,
    Extension(token): Extension<ApiToken>,
) -> Result<ApiJson<AppList>, ApiError> {
    let mut apps = deps.store.apps.list().await?;
    apps.retain(|app| token.covers(&app.name));
    Ok(ApiJson(AppList { apps }))
}

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
