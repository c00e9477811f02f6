//! The bytes of blobs (`shared::store::ObjectStore`): a local directory or an
//! S3-compatible bucket.
//!
//! What must stay true:
//! - object keys are made here as `<app>/<uuidv7>` and never derived from a blob name, so
//!   no name (`../x`, an absolute path, NUL, ...) can reach outside its app; a key that is
//!   not of that shape is treated as missing, never turned into a path;
//! - a local object appears under its final name only complete and fsynced: it is written
//!   to `<root>/.tmp/<uuid>`, fsynced, then renamed into `<root>/<app>/`;
//! - `sweep` removes only temp files older than `TEMP_MAX_AGE`, so a write in progress is
//!   never removed; finished objects are never swept;
//! - errors carry no path, endpoint or bucket in their message.
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use object_store::ObjectStoreExt;
use shared::store::{ObjectStore, Swept};
use shared::{AppName, StoreError};
use uuid::Uuid;

/// A temp file younger than this may belong to a write in progress.
pub const TEMP_MAX_AGE: Duration = Duration::from_secs(60);
const TEMP_DIR: &str = ".tmp";

/// Where an S3-compatible object store is and how to sign in to it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Options {
    /// `https://host:port` of an S3-compatible server; `None` for AWS itself.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Allow a plain `http://` endpoint (local development servers).
    pub allow_http: bool,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// Why an object operation failed; only ever the source of a `StoreError::Backend`.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object store I/O failed")]
    Io(#[source] io::Error),
    #[error("object store request failed")]
    Remote(#[source] object_store::Error),
    #[error("object store task failed")]
    Task,
}

fn io_err(e: io::Error) -> StoreError {
    StoreError::backend(ObjectError::Io(e))
}

fn remote_err(e: object_store::Error) -> StoreError {
    StoreError::backend(ObjectError::Remote(e))
}

/// A new key for an object of `app`.
fn new_key(app: &AppName) -> String {
    format!("{}/{}", app.as_str(), Uuid::now_v7())
}

/// The (app, uuid) of a key this module made; `None` for anything else.
fn parse_key(key: &str) -> Option<(AppName, Uuid)> {
    let (app, raw_id) = key.split_once('/')?;
    let app = AppName::parse(app).ok()?;
    let id = Uuid::try_parse(raw_id).ok()?;
    // Only the canonical hyphenated lowercase form is ever made, so only it maps to a file.
    (id.hyphenated().to_string() == raw_id).then_some((app, id))
}

/// Build the object store that `s3` or `blob_dir` names.
///
/// # Errors
/// `Backend` when the S3 configuration is incomplete or invalid.
pub fn build(s3: Option<&S3Options>, blob_dir: &Path) -> Result<Arc<dyn ObjectStore>, StoreError> {
    Ok(match s3 {
        Some(s3) => Arc::new(S3Objects::new(s3)?),
        None => Arc::new(LocalObjects::new(blob_dir)),
    })
}

/// Objects as files under `root`: `<root>/<app>/<uuid>`, temp files in `<root>/.tmp/`.
/// Directories are created when first needed.
#[derive(Debug, Clone)]
pub struct LocalObjects {
    root: PathBuf,
}

impl LocalObjects {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Option<PathBuf> {
        let (app, id) = parse_key(key)?;
        Some(
            self.root
                .join(app.as_str())
                .join(id.hyphenated().to_string()),
        )
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|_| StoreError::backend(ObjectError::Task))?
            .map_err(io_err)
    }
}

fn write_object(root: &Path, key_dir: &Path, file: &Path, data: &[u8]) -> io::Result<()> {
    let tmp_dir = root.join(TEMP_DIR);
    crate::private::create_dir_all(&tmp_dir)?;
    crate::private::create_dir_all(key_dir)?;
    let tmp = tmp_dir.join(Uuid::new_v4().simple().to_string());
    let written = (|| {
        let mut out = crate::private::create_new_file(&tmp)?;
        out.write_all(data)?;
        out.sync_all()?;
        drop(out);
        std::fs::rename(&tmp, file)
    })();
    if let Err(e) = written {
        std::fs::remove_file(&tmp).ok();
        return Err(e);
    }
    // Make the rename itself durable.
    #[cfg(unix)]
    std::fs::File::open(key_dir)?.sync_all()?;
    Ok(())
}

fn sweep_dir(tmp_dir: &Path, max_age: Duration) -> io::Result<Swept> {
    let entries = match std::fs::read_dir(tmp_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Swept::default()),
        Err(e) => return Err(e),
    };
    let now = SystemTime::now();
    let mut swept = Swept::default();
    for entry in entries {
        let entry = entry?;
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        if age < max_age {
            swept.kept += 1;
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => swept.removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(swept)
}

#[async_trait]
impl ObjectStore for LocalObjects {
    async fn put(&self, app: &AppName, data: Bytes) -> Result<String, StoreError> {
        let key = new_key(app);
        let file = self
            .path_of(&key)
            .ok_or_else(|| io_err(io::Error::other("malformed object key")))?;
        let root = self.root.clone();
        let key_dir = self.root.join(app.as_str());
        Self::blocking(move || write_object(&root, &key_dir, &file, &data)).await?;
        Ok(key)
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let Some(file) = self.path_of(key) else {
            return Err(StoreError::NotFound("blob"));
        };
        match tokio::fs::read(&file).await {
            Ok(data) => Ok(Bytes::from(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NotFound("blob")),
            Err(e) => Err(io_err(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let Some(file) = self.path_of(key) else {
            return Ok(());
        };
        match tokio::fs::remove_file(&file).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(e)),
        }
    }

    async fn sweep(&self) -> Result<Swept, StoreError> {
        let tmp_dir = self.root.join(TEMP_DIR);
        Self::blocking(move || sweep_dir(&tmp_dir, TEMP_MAX_AGE)).await
    }
}

/// Objects in an S3-compatible bucket under the same `<app>/<uuid>` keys. A single PUT is
/// atomic there, so nothing is ever left half-written and `sweep` has nothing to do.
#[derive(Debug)]
pub struct S3Objects {
    inner: object_store::aws::AmazonS3,
}

impl S3Objects {
    /// # Errors
    /// `Backend` when the options do not make a valid client.
    pub fn new(options: &S3Options) -> Result<Self, StoreError> {
        let mut builder = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&options.bucket)
            .with_region(&options.region)
            .with_access_key_id(&options.access_key_id)
            .with_secret_access_key(&options.secret_access_key)
            .with_allow_http(options.allow_http);
        if let Some(endpoint) = &options.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        Ok(Self {
            inner: builder.build().map_err(remote_err)?,
        })
    }

    fn location(key: &str) -> Option<object_store::path::Path> {
        parse_key(key)?;
        object_store::path::Path::parse(key).ok()
    }
}

#[async_trait]
impl ObjectStore for S3Objects {
    async fn put(&self, app: &AppName, data: Bytes) -> Result<String, StoreError> {
        let key = new_key(app);
        let location =
            Self::location(&key).ok_or_else(|| io_err(io::Error::other("malformed object key")))?;
        self.inner
            .put(&location, data.into())
            .await
            .map_err(remote_err)?;
        Ok(key)
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let Some(location) = Self::location(key) else {
            return Err(StoreError::NotFound("blob"));
        };
        match self.inner.get(&location).await {
            Ok(found) => found.bytes().await.map_err(remote_err),
            Err(object_store::Error::NotFound { .. }) => Err(StoreError::NotFound("blob")),
            Err(e) => Err(remote_err(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let Some(location) = Self::location(key) else {
            return Ok(());
        };
        match self.inner.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(remote_err(e)),
        }
    }

    async fn sweep(&self) -> Result<Swept, StoreError> {
        Ok(Swept::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str) -> AppName {
        AppName::parse(name).expect("app name")
    }

    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    out.push(path);
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn put_writes_a_file_under_the_app_and_get_and_delete_find_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = LocalObjects::new(dir.path().join("blobs"));
        let key = objects
            .put(&app("shop"), Bytes::from_static(b"hello"))
            .await
            .expect("put");
        assert!(key.starts_with("shop/"), "{key}");
        let files = files_under(dir.path());
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].starts_with(dir.path().join("blobs/shop")));
        assert_eq!(objects.get(&key).await.expect("get"), "hello");
        objects.delete(&key).await.expect("delete");
        assert!(matches!(
            objects.get(&key).await,
            Err(StoreError::NotFound("blob"))
        ));
        objects.delete(&key).await.expect("deleting twice is fine");
    }

    #[tokio::test]
    async fn empty_objects_are_stored_and_read_back_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = LocalObjects::new(dir.path());
        let key = objects.put(&app("shop"), Bytes::new()).await.expect("put");
        assert_eq!(objects.get(&key).await.expect("get").len(), 0);
    }

    #[tokio::test]
    async fn keys_not_made_here_are_missing_and_never_become_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("blobs");
        std::fs::create_dir_all(root.join("shop")).expect("mkdir");
        std::fs::write(dir.path().join("outside"), b"x").expect("write");
        let objects = LocalObjects::new(&root);
        for key in [
            "../outside",
            "shop/../../outside",
            "/etc/passwd",
            "shop",
            "Shop/0190b6a4-7c4f-7000-8000-000000000000",
            "shop/0190B6A4-7C4F-7000-8000-000000000000",
            "shop/not-a-uuid",
            "",
        ] {
            assert!(
                matches!(objects.get(key).await, Err(StoreError::NotFound("blob"))),
                "{key}"
            );
            objects.delete(key).await.expect("delete of a foreign key");
        }
        assert!(dir.path().join("outside").exists());
    }

    #[tokio::test]
    async fn sweep_removes_old_temp_files_and_keeps_fresh_ones_and_objects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = LocalObjects::new(dir.path());
        let key = objects
            .put(&app("shop"), Bytes::from_static(b"kept"))
            .await
            .expect("put");
        let tmp = dir.path().join(TEMP_DIR);
        let old = tmp.join("crashed");
        std::fs::write(&old, b"half").expect("write");
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .expect("open")
            .set_modified(long_ago)
            .expect("set mtime");
        let fresh = tmp.join("in-progress");
        std::fs::write(&fresh, b"writing").expect("write");

        let swept = |removed, kept| Swept { removed, kept };
        assert_eq!(objects.sweep().await.expect("sweep"), swept(1, 1));
        assert!(!old.exists());
        assert!(fresh.exists());
        assert_eq!(objects.get(&key).await.expect("object kept"), "kept");
        assert_eq!(objects.sweep().await.expect("sweep again"), swept(0, 1));
    }

    #[tokio::test]
    async fn sweeping_a_store_that_never_wrote_finds_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = LocalObjects::new(dir.path().join("never"));
        assert_eq!(objects.sweep().await.expect("sweep"), Swept::default());
    }

    #[test]
    fn s3_options_do_not_print_the_secret() {
        let options = S3Options {
            endpoint: Some("http://127.0.0.1:9000".into()),
            bucket: "b".into(),
            region: "us-east-1".into(),
            access_key_id: "id".into(),
            secret_access_key: "hunter2".into(),
            allow_http: true,
        };
        assert!(!format!("{options:?}").contains("hunter2"));
        assert!(S3Objects::new(&options).is_ok());
    }

    /// Runs against `PICLOUD_TEST_S3_ENDPOINT` (a bucket `picloud-test` must exist there)
    /// or a `moto_server` it starts itself. Without either it has nothing to talk to and
    /// says so on stderr: S3 is optional, the local store is the default.
    #[tokio::test]
    async fn s3_objects_round_trip_against_a_local_s3_compatible_server() {
        let Some(s3) = crate::testing::S3Server::start().await else {
            return;
        };
        let endpoint = s3.endpoint.clone();
        let objects = S3Objects::new(&S3Options {
            endpoint: Some(endpoint),
            bucket: "picloud-test".into(),
            region: "us-east-1".into(),
            access_key_id: "test".into(),
            secret_access_key: "test".into(),
            allow_http: true,
        })
        .expect("client");
        let key = objects
            .put(&app("shop"), Bytes::from_static(b"in s3"))
            .await
            .expect("put");
        assert!(key.starts_with("shop/"), "{key}");
        assert_eq!(objects.get(&key).await.expect("get"), "in s3");
        let empty = objects.put(&app("shop"), Bytes::new()).await.expect("put");
        assert!(objects.get(&empty).await.expect("get").is_empty());
        objects.delete(&key).await.expect("delete");
        assert!(matches!(
            objects.get(&key).await,
            Err(StoreError::NotFound("blob"))
        ));
        objects
            .delete(&key)
            .await
            .expect("deleting a missing object");
        assert!(matches!(
            objects.get("../etc/passwd").await,
            Err(StoreError::NotFound("blob"))
        ));
        assert_eq!(objects.sweep().await.expect("sweep"), Swept::default());
    }
}
