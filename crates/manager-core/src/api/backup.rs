//! `GET /api/v1/backup` and `POST /api/v1/restore` (docs/backup.md): the whole server as
//! one archive (`crate::backup`), and back into a server on either backend.
//!
//! A backup reads the database in one read-only snapshot while the server keeps serving,
//! then copies the blob objects its `blobs` rows name; an object that a write replaced
//! after the snapshot is gone, and its row is left out (the manifest counts it as
//! `blobs_changed`). The archive is written to a temporary file first, so the answer
//! carries its length.
//!
//! A restore reads the upload into a temporary file and checks all of it before writing
//! anything (`crate::backup::verify`); then it stores the blob objects under new keys,
//! writes every row in one transaction, and only then drops what it replaced. A failure
//! at any step removes the objects it stored: nothing is restored.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::store::{RestoreError, TableRows};
use shared::{AppName, CatalogChange, ErrorBody, StoreError};
use tokio::io::AsyncWriteExt;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};

use super::ManagerDeps;
use super::error::ApiError;
use super::extract::ApiQuery;
use super::json::ApiJson;
use crate::backup::{self as archive, ArchiveError, ArchiveWriter, Manifest};

/// A backup archive's schema: binary, a tar file with a manifest (docs/backup.md).
pub(super) struct Archive;

impl utoipa::PartialSchema for Archive {
    fn schema() -> RefOr<Schema> {
        RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
                .description(Some(
                    "A tar file: tables/*.jsonl, objects/*, and manifest.json last (docs/backup.md).",
                ))
                .build(),
        ))
    }
}

impl ToSchema for Archive {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Archive")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BackupQuery {
    with_invocations: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RestoreQuery {
    force: Option<bool>,
}

/// What a restore wrote.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RestoreAnswer {
    /// The apps the archive held, now on this server.
    apps: Vec<String>,
    /// The apps this server had under the same names, replaced (only with `force`).
    replaced: Vec<String>,
    /// Rows written per table.
    rows: BTreeMap<String, u64>,
    /// Blob objects stored.
    objects: u64,
    /// The archive's manifest.
    manifest: Manifest,
}

impl From<ArchiveError> for ApiError {
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::Invalid(msg) => ApiError::InvalidInput(msg),
            ArchiveError::Io(e) => ApiError::Internal(Box::new(e)),
        }
    }
}

/// Run file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ArchiveError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?
        .map_err(ApiError::from)
}

fn temp_file() -> Result<std::fs::File, ApiError> {
    tempfile::tempfile().map_err(|e| ApiError::Internal(Box::new(e)))
}

fn text<'a>(row: &'a serde_json::Map<String, Value>, col: &str) -> &'a str {
    row.get(col).and_then(Value::as_str).unwrap_or_default()
}

/// Download a backup of the whole server.
///
/// One archive (a tar file) of every app with every script version, triggers, config,
/// secrets (still sealed with the server's key, whose fingerprint the manifest names),
/// limits, tokens (hashed), realtime topics and keys, KV entries, blobs, dead letters and
/// pending events; invocation records only with `with_invocations=true`. Read in one
/// consistent snapshot while the server keeps running. See docs/backup.md.
#[utoipa::path(
    get,
    path = "/api/v1/backup",
    operation_id = "backup",
    tag = "backup",
    params(("with_invocations" = Option<bool>, Query, description = "Also keep the invocation records (default false)")),
    responses(
        (status = 200, description = "The archive", content_type = "application/x-tar", body = Archive),
    ),
    extensions(("x-picloud-access" = json!("admin")))
)]
#[tracing::instrument(skip_all)]
pub(super) async fn backup(
    State(deps): State<Arc<ManagerDeps>>,
    ApiQuery(query): ApiQuery<BackupQuery>,
) -> Result<Response, ApiError> {
    let with_invocations = query.with_invocations.unwrap_or(false);
    let started = std::time::Instant::now();
    let backup = &deps.store.backup;
    let mut snapshot = backup.snapshot(with_invocations).await?;
    let mut writer = ArchiveWriter::new(temp_file()?);
    let mut counts = BTreeMap::new();
    let mut stored = BTreeSet::new();
    let mut changed = 0;
    if let Some(blobs) = snapshot.tables.iter_mut().find(|t| t.table == "blobs") {
        let mut kept = Vec::with_capacity(blobs.rows.len());
        for row in std::mem::take(&mut blobs.rows) {
            let key = text(&row, "object").to_owned();
            if stored.contains(&key) {
                kept.push(row);
                continue;
            }
            match deps.store.objects.get(&key).await {
                Ok(bytes) => {
                    let path = archive::object_path(&key);
                    writer = blocking(move || writer.add(&path, &bytes).map(|()| writer)).await?;
                    stored.insert(key);
                    kept.push(row);
                }
                // Replaced or deleted after the snapshot: the row is no longer true.
                Err(StoreError::NotFound(_)) => changed += 1,
                Err(e) => return Err(e.into()),
            }
        }
        blobs.rows = kept;
    }
    for t in &snapshot.tables {
        counts.insert(t.table.clone(), t.rows.len() as u64);
    }
    counts.insert("objects".into(), stored.len() as u64);
    if changed > 0 {
        counts.insert("blobs_changed".into(), changed);
    }
    let manifest = Manifest {
        format: archive::FORMAT.into(),
        format_version: archive::FORMAT_VERSION,
        picloud_version: env!("CARGO_PKG_VERSION").into(),
        schema_version: snapshot.schema_version,
        created_at: Utc::now(),
        backend: deps.store.health.backend().into(),
        key_fingerprint: backup.key_fingerprint().into(),
        with_invocations,
        counts,
        entries: Vec::new(),
    };
    let name = format!(
        "attachment; filename=\"picloud-backup-{}.tar\"",
        manifest.created_at.format("%Y%m%dT%H%M%SZ")
    );
    let tables = snapshot.tables;
    let (file, size) = blocking(move || {
        for t in &tables {
            writer.add_table(t)?;
        }
        writer.finish(manifest)
    })
    .await?;
    tracing::info!(
        bytes = size,
        ms = started.elapsed().as_millis() as u64,
        "backup written"
    );
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(value) = HeaderValue::from_str(&name) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Restore a backup into this server.
///
/// The body is an archive from `GET /api/v1/backup`, from this or the other backend. All
/// of it is checked first (every entry's checksum, the PiCloud version that wrote it, the
/// secrets key's fingerprint); a damaged, truncated or newer archive restores nothing. A
/// server that already has apps refuses (`409`, naming them) unless `force=true`: then the
/// archive's apps replace those of the same name, and other apps stay. API tokens are
/// added beside this server's own. See docs/backup.md.
#[utoipa::path(
    post,
    path = "/api/v1/restore",
    operation_id = "restore",
    tag = "backup",
    params(("force" = Option<bool>, Query, description = "Restore into a server that already has apps, replacing those the archive also has (default false)")),
    request_body(content(
        (Archive = "application/x-tar"),
        (Archive = "application/octet-stream"),
    ), description = "An archive from `GET /api/v1/backup`"),
    responses(
        (status = 200, description = "Restored", body = RestoreAnswer),
        (status = 409, description = "The server already has apps and `force` is not set, or the archive's secrets are sealed with another key (`conflict`)", body = ErrorBody),
        (status = 400, description = "The archive is damaged, truncated, not a PiCloud backup, or from a newer PiCloud (`invalid_input`)", body = ErrorBody),
    ),
    extensions(("x-picloud-access" = json!("admin")))
)]
#[tracing::instrument(skip_all)]
pub(super) async fn restore(
    State(deps): State<Arc<ManagerDeps>>,
    ApiQuery(query): ApiQuery<RestoreQuery>,
    body: Body,
) -> Result<ApiJson<RestoreAnswer>, ApiError> {
    let force = query.force.unwrap_or(false);
    let mut upload = tokio::fs::File::from_std(temp_file()?);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| {
            ApiError::InvalidInput("the upload of the archive did not complete".into())
        })?;
        upload
            .write_all(&chunk)
            .await
            .map_err(|e| ApiError::Internal(Box::new(e)))?;
    }
    upload
        .flush()
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    let mut file = upload.into_std().await;
    let schema = deps.store.backup.schema_version();
    let (mut file, verified) = blocking(move || {
        let verified = archive::verify(&mut file, schema)?;
        Ok((file, verified))
    })
    .await?;
    let archive::Verified {
        manifest,
        mut tables,
        objects,
    } = verified;
    check_key(&deps, &manifest, &tables)?;
    let apps = names(&tables, "apps", "name");
    let replaced = check_target(&deps, &apps, force).await?;
    // Which app each object belongs to, from the rows that name it.
    let mut owners: HashMap<String, AppName> = HashMap::new();
    if let Some(blobs) = tables.iter().find(|t| t.table == "blobs") {
        for row in &blobs.rows {
            let object = text(row, "object");
            if !objects.contains(object) {
                return Err(ApiError::InvalidInput(format!(
                    "the archive lacks the bytes of blob '{}' of app '{}'",
                    text(row, "name"),
                    text(row, "app")
                )));
            }
            let app = AppName::parse(text(row, "app")).map_err(|_| {
                ApiError::InvalidInput("the archive holds an invalid app name".into())
            })?;
            owners.insert(object.to_owned(), app);
        }
    }
    // Objects first: a failure leaves no row pointing at a missing object.
    let (sender, mut received) = tokio::sync::mpsc::channel::<(String, Vec<u8>)>(2);
    let reader = tokio::task::spawn_blocking(move || {
        archive::for_each_object(&mut file, |key, data| {
            sender
                .blocking_send((key, data))
                .map_err(|_| ArchiveError::Invalid("stopped".into()))
        })
    });
    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut failed = None;
    while let Some((key, data)) = received.recv().await {
        let Some(app) = owners.get(&key) else {
            continue; // no row names it: nothing to restore
        };
        match deps.store.objects.put(app, Bytes::from(data)).await {
            Ok(new_key) => {
                renamed.insert(key, new_key);
            }
            Err(e) => {
                failed = Some(ApiError::from(e));
                break;
            }
        }
    }
    drop(received);
    let read = reader.await.map_err(|e| ApiError::Internal(Box::new(e)));
    let failed = failed.or(match read {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.into()),
        Err(e) => Some(e),
    });
    if let Some(e) = failed {
        remove_objects(&deps, renamed.values()).await;
        return Err(e);
    }
    if let Some(blobs) = tables.iter_mut().find(|t| t.table == "blobs") {
        for row in &mut blobs.rows {
            let new_key = renamed.get(text(row, "object")).cloned();
            row.insert("object".into(), new_key.map_or(Value::Null, Value::String));
        }
    }
    let restored = match deps.store.backup.restore(tables).await {
        Ok(restored) => restored,
        Err(e) => {
            remove_objects(&deps, renamed.values()).await;
            return Err(match e {
                RestoreError::Archive(msg) => ApiError::InvalidInput(msg),
                RestoreError::Store(e) => e.into(),
            });
        }
    };
    remove_objects(&deps, restored.freed_objects.iter()).await;
    deps.catalog.publish(CatalogChange::Everything).await;
    tracing::info!(
        apps = apps.len(),
        objects = renamed.len(),
        "backup restored"
    );
    Ok(ApiJson(RestoreAnswer {
        apps,
        replaced,
        rows: restored.rows.into_iter().collect(),
        objects: renamed.len() as u64,
        manifest,
    }))
}

/// The values of `col` in `table`'s rows.
fn names(tables: &[TableRows], table: &str, col: &str) -> Vec<String> {
    tables
        .iter()
        .filter(|t| t.table == table)
        .flat_map(|t| t.rows.iter().map(|r| text(r, col).to_owned()))
        .collect()
}

/// Secrets sealed with another key would restore as unreadable: refused, unless the
/// archive has none.
fn check_key(
    deps: &ManagerDeps,
    manifest: &Manifest,
    tables: &[TableRows],
) -> Result<(), ApiError> {
    let ours = deps.store.backup.key_fingerprint();
    let secrets = tables
        .iter()
        .filter(|t| t.table == "app_secrets")
        .map(|t| t.rows.len())
        .sum::<usize>();
    if secrets == 0 || manifest.key_fingerprint == ours {
        return Ok(());
    }
    Err(ApiError::Conflict(format!(
        "the archive's secrets are sealed with another key (fingerprint {}) than this server's ({ours}): start this server with the secrets key file of the server the archive came from, then restore again",
        manifest
            .key_fingerprint
            .chars()
            .take(80)
            .collect::<String>()
    )))
}

/// Refuse a server that has apps unless `force`; returns the apps that will be replaced.
async fn check_target(
    deps: &ManagerDeps,
    apps: &[String],
    force: bool,
) -> Result<Vec<String>, ApiError> {
    let existing: Vec<String> = deps
        .store
        .apps
        .list()
        .await?
        .into_iter()
        .map(|a| a.name.to_string())
        .collect();
    let replaced: Vec<String> = existing
        .iter()
        .filter(|a| apps.contains(a))
        .cloned()
        .collect();
    if existing.is_empty() || force {
        return Ok(replaced);
    }
    let kept: Vec<&String> = existing.iter().filter(|a| !apps.contains(a)).collect();
    let mut msg = format!(
        "this server already has {} app(s): {}. ",
        existing.len(),
        existing.join(", ")
    );
    if replaced.is_empty() {
        msg.push_str("None has the name of an app in the archive; ");
    } else {
        msg.push_str(&format!(
            "restoring would replace {} with everything in it (scripts, data, secrets); ",
            replaced.join(", ")
        ));
    }
    if !kept.is_empty() {
        let kept: Vec<&str> = kept.iter().map(|s| s.as_str()).collect();
        msg.push_str(&format!("{} would stay; ", kept.join(", ")));
    }
    msg.push_str("pass --force (force=true) to restore anyway");
    Err(ApiError::Conflict(msg))
}

/// Best effort: an object left behind is only garbage.
async fn remove_objects<'a>(deps: &ManagerDeps, keys: impl Iterator<Item = &'a String>) {
    for key in keys {
        if let Err(e) = deps.store.objects.delete(key).await {
            tracing::warn!(error = %e, "a blob object could not be removed");
        }
    }
}
