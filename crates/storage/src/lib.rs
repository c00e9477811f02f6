//! The repository traits of `shared::store`, implemented for SQLite and for PostgreSQL.
//!
//! `connect` picks the backend from the URL, opens a pool and runs that backend's
//! migrations before anything else touches the database. The repositories' rules and row
//! mapping are written once (`repo`, `outbox`) over `sql`, which builds statements and
//! reads rows without naming the database; each backend writes only its own SQL
//! (runtime-checked, one `const` per statement), how it starts a write transaction, and
//! the few things it does its own way (PostgreSQL's batch statements and LISTEN). What
//! must stay true on both:
//! - every table references `apps(name) ON DELETE CASCADE`, so deleting an app is one statement;
//! - every multi-statement write is one transaction, checked inside that transaction;
//! - errors going up carry no SQL, path or address (see `error`).
//!
//! With the `conformance` feature, `conformance` holds the behaviour suite both backends
//! pass and `testing` makes fresh, isolated databases for it.
//!
//! App data needs more than a URL: `connect_with` also takes where blob bytes go (a local
//! directory or S3) and the key that encrypts secrets at rest (`StoreOptions`).
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use shared::store::ObjectStore;
use shared::{Store, StoreError};

mod backup; // backup and restore: every table, once for both backends
pub mod crypto;
mod error;
mod limits; // the limit columns both backends share
mod meta; // facts a server checks when it starts
pub mod objects;
mod outbox; // the outbox's rules: routing, fan-out, dead letters, unreadable rows
mod pool; // when a pooled PostgreSQL connection is pinged before its use
mod postgres; // PostgreSQL's SQL, and its batch and LISTEN machinery
mod private;
mod repo; // every other repository, its rules and row mapping once
mod sql; // statements and rows without naming the backend
mod sqlite; // SQLite's SQL
mod token_scope; // a token's app list as stored: comma-separated names

pub use crypto::{
    ClusterKeyMismatch, KeyMismatch, load_or_create_key, read_key_file, write_key_file,
};
pub use objects::{LocalObjects, S3Objects, S3Options};
#[cfg(feature = "conformance")]
pub(crate) use outbox::UNREADABLE_EVENT;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "conformance")]
pub mod testing;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Tell the backend from a database URL: `postgres://` or `postgresql://` is PostgreSQL;
/// `sqlite://`, `sqlite:` or a plain file path is SQLite.
///
/// # Errors
/// `InvalidUrl` for any other scheme (`mysql://`, `http://`, ...) or an empty string.
pub fn backend_of(url: &str) -> Result<Backend, InvalidUrl> {
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.is_empty() || url.contains("://") {
        Err(InvalidUrl)
    } else {
        Ok(Backend::Sqlite)
    }
}

/// A database URL that names neither SQLite nor PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the database URL must start with sqlite://, postgres:// or postgresql://, or be a file path"
)]
pub struct InvalidUrl;

/// Open the database that `url` names, run its migrations and return its repositories.
///
/// SQLite (`sqlite://path`, `sqlite:path` or a plain path) creates the file and its parent
/// directory when missing and runs in WAL mode; PostgreSQL (`postgres://...`) honours the
/// usual URL parameters, including `options=-c search_path=...`.
///
/// # Errors
/// `Backend` when the URL names no supported database, the database cannot be opened or
/// reached, or a migration fails; the cause is in the error's source, not its message.
///
/// Blobs go to a `blobs` directory next to a SQLite file (a new directory under the system
/// temp dir for PostgreSQL or an in-memory SQLite), and secrets are sealed with a random
/// key that dies with the process: servers call [`connect_with`] instead.
pub async fn connect(url: &str) -> Result<Store, StoreError> {
    let backend = backend_of(url).map_err(StoreError::backend)?;
    let blob_dir = match backend {
        Backend::Sqlite => sqlite::default_blob_dir(url),
        Backend::Postgres => None,
    }
    .unwrap_or_else(|| {
        std::env::temp_dir().join(format!("picloud-blobs-{}", uuid::Uuid::new_v4().simple()))
    });
    connect_with(
        url,
        StoreOptions {
            blob_dir,
            s3: None,
            secret_key: crypto::random_key(),
        },
    )
    .await
}

/// What app data needs besides the database.
#[derive(Clone)]
pub struct StoreOptions {
    /// Where local blob objects live (unused when `s3` is set); created when first needed.
    pub blob_dir: PathBuf,
    /// Keep blob objects in an S3-compatible bucket instead.
    pub s3: Option<S3Options>,
    /// Encrypts secrets at rest; see [`load_or_create_key`].
    pub secret_key: [u8; crypto::KEY_LEN],
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("blob_dir", &self.blob_dir)
            .field("s3", &self.s3)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

/// [`connect`], with blob storage and the secret key from `options`.
///
/// # Errors
/// As [`connect`]; also `Backend` when the S3 options do not make a valid client.
pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
    let backend = backend_of(url).map_err(StoreError::backend)?;
    let data = DataParts {
        objects: objects::build(options.s3.as_ref(), &options.blob_dir)?,
        secrets: Arc::new(crypto::SecretBox::new(&options.secret_key)),
        key_fingerprint: crypto::key_fingerprint(&options.secret_key),
    };
    match backend {
        Backend::Sqlite => sqlite::connect(url, data).await,
        Backend::Postgres => postgres::connect(url, data).await,
    }
}

/// What the backends' app-data repositories share beyond the pool.
pub(crate) struct DataParts {
    pub(crate) objects: Arc<dyn ObjectStore>,
    pub(crate) secrets: Arc<crypto::SecretBox>,
    /// Checked against the database's record at connect (`crypto::KeyMismatch`).
    pub(crate) key_fingerprint: String,
}

/// The least string above every string that starts with `prefix` (`None`: no bound), so
/// `key >= prefix AND key < end` is a prefix match that uses the index and never treats
/// input as a pattern. Byte order of UTF-8 is code point order, which is how both backends
/// compare these columns (SQLite's BINARY, PostgreSQL's "C" collation).
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match u32::from(last) + 1 {
            0xD800 => 0xE000,
            n => n,
        };
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// `at + ttl` for a KV write; a ttl too large to represent never expires.
pub(crate) fn expiry(at: DateTime<Utc>, ttl: Option<std::time::Duration>) -> Option<DateTime<Utc>> {
    let ttl = chrono::TimeDelta::from_std(ttl?).ok()?;
    at.checked_add_signed(ttl)
}

/// The database's schema is behind what this build expects.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the database schema is at migration {applied}, this server expects {expected}")]
pub struct SchemaNotCurrent {
    pub applied: i64,
    pub expected: i64,
}

/// `Ok` when the newest embedded migration has been applied.
pub(crate) fn schema_is_current(
    applied: i64,
    migrations: &[(&str, i64, &str, &str)],
) -> Result<(), StoreError> {
    let expected = migrations.last().map_or(0, |m| m.1);
    if applied >= expected {
        Ok(())
    } else {
        Err(StoreError::backend(SchemaNotCurrent { applied, expected }))
    }
}

/// Map a write that names an app: a foreign-key failure means the app is gone.
pub(crate) fn app_missing(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(d) = &e
        && matches!(d.kind(), sqlx::error::ErrorKind::ForeignKeyViolation)
    {
        return StoreError::NotFound("app");
    }
    error::db(e)
}

/// The current time at the precision both backends keep (microseconds), so that what a
/// write returns equals what a later read returns.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Turn a stored name back into its validated type; a failure means a corrupt row.
pub(crate) fn decode<T>(
    raw: &str,
    parse: impl FnOnce(&str) -> Result<T, shared::InvalidName>,
) -> Result<T, StoreError> {
    parse(raw).map_err(StoreError::backend)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_backend_by_scheme_and_refuse_others() {
        assert_eq!(backend_of("postgres://u@h/db"), Ok(Backend::Postgres));
        assert_eq!(backend_of("postgresql://u@h/db"), Ok(Backend::Postgres));
        assert_eq!(backend_of("sqlite://data/p.db"), Ok(Backend::Sqlite));
        assert_eq!(backend_of("sqlite:p.db"), Ok(Backend::Sqlite));
        assert_eq!(backend_of("./picloud-data/picloud.db"), Ok(Backend::Sqlite));
        assert_eq!(backend_of("mysql://h/db"), Err(InvalidUrl));
        assert_eq!(backend_of(""), Err(InvalidUrl));
    }

    #[tokio::test]
    async fn connecting_to_an_unknown_scheme_is_a_clear_error_without_the_url() {
        let Err(err) = connect("mysql://secret-host/db").await else {
            panic!("mysql URL was accepted");
        };
        assert!(matches!(err, StoreError::Backend(_)));
        assert!(!err.to_string().contains("secret-host"));
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(source.is_some_and(|s| s.contains("postgres://")));
    }

    #[test]
    fn a_prefix_end_bounds_exactly_the_strings_with_that_prefix() {
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_end("a%").as_deref(), Some("a&"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        assert_eq!(prefix_end("x\u{D7FF}").as_deref(), Some("x\u{E000}"));
        let end = prefix_end("ab").expect("bound");
        for inside in ["ab", "ab\u{10FFFF}", "abzzz"] {
            assert!(inside >= "ab" && inside < end.as_str(), "{inside}");
        }
        for outside in ["aa", "ac", "b", "a"] {
            assert!(!(outside >= "ab" && outside < end.as_str()), "{outside}");
        }
    }

    #[test]
    fn both_backends_have_the_same_migration_files() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let names = |backend: &str| {
            let mut names: Vec<String> = std::fs::read_dir(root.join(backend))
                .expect("migrations folder")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let sqlite = names("sqlite");
        assert!(!sqlite.is_empty());
        assert_eq!(sqlite, names("postgres"));
        for embedded in [sqlite::MIGRATIONS, postgres::MIGRATIONS] {
            let files: Vec<&str> = embedded.iter().map(|m| m.0).collect();
            assert_eq!(sqlite, files);
            for (file, version, name, _) in embedded {
                assert_eq!(*file, format!("{version:04}_{name}.sql"));
            }
        }
    }
}
