//! The repository traits of `shared::store`, implemented for SQLite and for PostgreSQL.
//!
//! `connect` picks the backend from the URL, opens a pool and runs that backend's
//! migrations before anything else touches the database. Each backend writes its own SQL
//! (runtime-checked `sqlx::query`, one `const` per statement) and maps rows back in one
//! small function per type. What must stay true on both:
//! - every table references `apps(name) ON DELETE CASCADE`, so deleting an app is one statement;
//! - every multi-statement write is one transaction, checked inside that transaction;
//! - errors going up carry no SQL, path or address (see `error`).
//!
//! With the `conformance` feature, `conformance` holds the behaviour suite both backends
//! pass and `testing` makes fresh, isolated databases for it.
use chrono::{DateTime, SubsecRound, Utc};
use shared::{Store, StoreError};

mod error;
mod postgres;
mod sqlite;

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
pub async fn connect(url: &str) -> Result<Store, StoreError> {
    match backend_of(url).map_err(StoreError::backend)? {
        Backend::Sqlite => sqlite::connect(url).await,
        Backend::Postgres => postgres::connect(url).await,
    }
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
