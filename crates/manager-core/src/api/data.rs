//! `/api/v1/apps/{app}/kv` and `/api/v1/apps/{app}/blobs`: read, list and delete what an
//! app's scripts stored. Scripts write through their buffered effects; the admin API only
//! reads and deletes.
//!
//! What must stay true: every lookup is scoped to the app in the path, and a name is data,
//! never a path. A blob is served as an attachment with `nosniff` and a sandboxing CSP, so
//! content a script stored cannot run as a page on the admin origin.
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shared::store::{BlobMeta, KvEntry};
use shared::{AppName, ErrorBody, check_data_name};
use utoipa::ToSchema;

use super::names::{BlobName, BlobPrefix, KvKey, KvPrefix};

use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use super::json::ApiJson;
use super::{ManagerDeps, parse_limit, require_app};

/// The longest KV key, in bytes.
pub(super) const MAX_KEY_BYTES: usize = 512;
/// The longest blob name, in bytes.
pub(super) const MAX_BLOB_NAME_BYTES: usize = 1024;
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

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
pub(super) struct BlobPath {
    app: AppName,
    name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// A list query, validated.
struct Listing {
    prefix: String,
    after: Option<String>,
    limit: u32,
}

impl ListQuery {
    fn validate(self, what: &str, max: usize) -> Result<Listing, ApiError> {
        let prefix = self.prefix.unwrap_or_default();
        if prefix.len() > max || prefix.chars().any(char::is_control) {
            return Err(ApiError::InvalidInput(format!(
                "prefix must be at most {max} bytes without control characters"
            )));
        }
        if let Some(after) = &self.after {
            check_data_name(&format!("after ({what})"), after, max)
                .map_err(|e| ApiError::InvalidInput(e.0))?;
        }
        Ok(Listing {
            prefix,
            after: self.after,
            limit: parse_limit(self.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct KvPage {
    entries: Vec<KvEntry>,
    /// The key to pass as `after` for the next page; `null` on the last page.
    next_after: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct BlobPage {
    blobs: Vec<BlobMeta>,
    /// The name to pass as `after` for the next page; `null` on the last page.
    next_after: Option<String>,
}

/// The last item's name when the page is full (there may be more).
fn next_after<T>(items: &[T], limit: u32, name: impl Fn(&T) -> &str) -> Option<String> {
    let full = u32::try_from(items.len()).is_ok_and(|n| n >= limit);
    if full {
        items.last().map(|i| name(i).to_owned())
    } else {
        None
    }
}

fn check(what: &str, raw: &str, max: usize) -> Result<(), ApiError> {
    check_data_name(what, raw, max).map_err(|e| ApiError::InvalidInput(e.0))
}

/// List KV entries in key order.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/kv",
    operation_id = "list_kv",
    tag = "data",
    params(("app" = AppName, Path, description = "The app's name"),
        ("prefix" = Option<KvPrefix>, Query, description = "Only names starting with this"),
        ("after" = Option<KvKey>, Query, description = "The previous page's `next_after`"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)")),
    responses(
        (status = 200, description = "A page of entries", body = KvPage, links(
            ("get" = (operation_id = "get_kv", parameters(("app" = "$request.path.app"), ("key" = "$response.body#/entries/0/key")))),
            ("delete" = (operation_id = "delete_kv", parameters(("app" = "$request.path.app"), ("key" = "$response.body#/entries/0/key")))),
        )),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn kv_list(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<KvPage>, ApiError> {
    let q = query.validate("key", MAX_KEY_BYTES)?;
    require_app(&deps, &app).await?;
    let entries = deps
        .store
        .kv
        .list(&app, &q.prefix, q.after.as_deref(), q.limit)
        .await?;
    let next_after = next_after(&entries, q.limit, |e| &e.key);
    Ok(ApiJson(KvPage {
        entries,
        next_after,
    }))
}

/// Show one KV entry.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/kv/{key}",
    operation_id = "get_kv",
    tag = "data",
    params(("app" = AppName, Path, description = "The app's name"), ("key" = KvKey, Path, description = "The key (percent-encoded)")),
    responses(
        (status = 200, description = "The entry", body = KvEntry),
        (status = 404, description = "No such app or key (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn kv_get(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(KeyPath { app, key }): ApiPath<KeyPath>,
) -> Result<ApiJson<KvEntry>, ApiError> {
    check("key", &key, MAX_KEY_BYTES)?;
    match deps.store.kv.get(&app, &key).await? {
        Some(entry) => Ok(ApiJson(entry)),
        None => {
            require_app(&deps, &app).await?;
            Err(ApiError::not_found("key", key))
        }
    }
}

/// Delete one KV entry.
#[utoipa::path(
    delete,
    path = "/api/v1/apps/{app}/kv/{key}",
    operation_id = "delete_kv",
    tag = "data",
    params(("app" = AppName, Path, description = "The app's name"), ("key" = KvKey, Path, description = "The key (percent-encoded)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such app or key (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
#[tracing::instrument(skip_all, fields(app = %app))]
pub(super) async fn kv_delete(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(KeyPath { app, key }): ApiPath<KeyPath>,
) -> Result<StatusCode, ApiError> {
    check("key", &key, MAX_KEY_BYTES)?;
    require_app(&deps, &app).await?;
    if deps.store.kv.delete(&app, &key).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("key", key))
    }
}

/// List blobs in name order.
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/blobs",
    operation_id = "list_blobs",
    tag = "data",
    params(("app" = AppName, Path, description = "The app's name"),
        ("prefix" = Option<BlobPrefix>, Query, description = "Only names starting with this"),
        ("after" = Option<BlobName>, Query, description = "The previous page's `next_after`"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)")),
    responses(
        (status = 200, description = "A page of blobs", body = BlobPage, links(
            ("get" = (operation_id = "get_blob", parameters(("app" = "$request.path.app"), ("name" = "$response.body#/blobs/0/name")))),
            ("delete" = (operation_id = "delete_blob", parameters(("app" = "$request.path.app"), ("name" = "$response.body#/blobs/0/name")))),
        )),
        (status = 404, description = "No such app (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn blob_list(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(AppPath { app }): ApiPath<AppPath>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<BlobPage>, ApiError> {
    let q = query.validate("blob name", MAX_BLOB_NAME_BYTES)?;
    require_app(&deps, &app).await?;
    let blobs = deps
        .store
        .blobs
        .list(&app, &q.prefix, q.after.as_deref(), q.limit)
        .await?;
    let next_after = next_after(&blobs, q.limit, |b| &b.name);
    Ok(ApiJson(BlobPage { blobs, next_after }))
}

/// Download a blob.
///
/// Its exact bytes with its content type, as an attachment (`nosniff`, `sandbox`).
#[utoipa::path(
    get,
    path = "/api/v1/apps/{app}/blobs/{name}",
    operation_id = "get_blob",
    tag = "data",
    params(("app" = AppName, Path, description = "The app's name"), ("name" = BlobName, Path, description = "The blob's name")),
    responses(
        (status = 200, description = "The blob's bytes", content_type = "*/*", body = Vec<u8>),
        (status = 404, description = "No such app or blob (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("read")))
)]
pub(super) async fn blob_get(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(BlobPath { app, name }): ApiPath<BlobPath>,
) -> Result<Response, ApiError> {
    check("blob name", &name, MAX_BLOB_NAME_BYTES)?;
    let Some(meta) = deps.store.blobs.get(&app, &name).await? else {
        require_app(&deps, &app).await?;
        return Err(ApiError::not_found("blob", name));
    };
    let bytes = deps
        .store
        .objects
        .get(&meta.object)
        .await
        .map_err(|e| ApiError::from_store(e, |_| name.clone()))?;
    let content_type = meta
        .content_type
        .as_deref()
        .and_then(|ct| HeaderValue::from_str(ct).ok())
        .unwrap_or_else(|| HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
    let mut response = Body::from(bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    Ok(response)
}

/// Delete a blob.
#[utoipa::path(
    delete,
    path = "/api/v1/apps/{app}/blobs/{name}",
    operation_id = "delete_blob",
    tag = "data",
    params(("app" = AppName, Path, description = "The app's name"), ("name" = BlobName, Path, description = "The blob's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such app or blob (`not_found`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("deploy")))
)]
#[tracing::instrument(skip_all, fields(app = %app))]
pub(super) async fn blob_delete(
    State(deps): State<Arc<ManagerDeps>>,
    ApiPath(BlobPath { app, name }): ApiPath<BlobPath>,
) -> Result<StatusCode, ApiError> {
    check("blob name", &name, MAX_BLOB_NAME_BYTES)?;
    require_app(&deps, &app).await?;
    let Some(object) = deps.store.blobs.delete(&app, &name).await? else {
        return Err(ApiError::not_found("blob", name));
    };
    // The name is gone; an object left behind is only garbage, so a failure is logged.
    if let Err(e) = deps.store.objects.delete(&object).await {
        tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "blob object could not be removed");
    }
    Ok(StatusCode::NO_CONTENT)
}
