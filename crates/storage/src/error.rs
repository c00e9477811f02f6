//! From `sqlx::Error` to `StoreError`. The database's text (which may quote SQL, values or
//! file paths) stays in the source for the log; the message only names what happened.
use shared::StoreError;
use sqlx::error::ErrorKind;

/// SQLite's primary result codes for "locked": `SQLITE_BUSY` and `SQLITE_LOCKED`.
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;

/// Map a database error; a unique violation becomes `Conflict(what)`.
pub(crate) fn conflict_as(what: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| match unique_or_busy(&e) {
        Some(Kind::Unique) => StoreError::Conflict(what),
        Some(Kind::Busy) => StoreError::Busy,
        None => StoreError::backend(e),
    }
}

/// Map a database error where no uniqueness rule is expected to fire.
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    if lost_connection(&e) {
        crate::pool::connection_lost();
    }
    match unique_or_busy(&e) {
        Some(Kind::Busy) => StoreError::Busy,
        _ => StoreError::backend(e),
    }
}

/// Whether `e` says the connection is gone (its socket failed, or the server ended the
/// session: SQLSTATE class 08, or 57P01-57P03 when it was terminated or shut down), rather
/// than that a statement failed on a working connection.
pub(crate) fn lost_connection(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// Whether `e` is a storage error that came from a lost connection (`lost_connection`).
pub(crate) fn is_lost_connection(e: &StoreError) -> bool {
    match e {
        StoreError::Backend(source) => source
            .downcast_ref::<sqlx::Error>()
            .is_some_and(lost_connection),
        _ => false,
    }
}

/// A stored invocation status that is none of the known ones: a corrupt row.
#[derive(Debug, thiserror::Error)]
#[error("unknown invocation status in a stored row")]
pub(crate) struct CorruptStatus;

enum Kind {
    Unique,
    Busy,
}

fn unique_or_busy(e: &sqlx::Error) -> Option<Kind> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    if matches!(db.kind(), ErrorKind::UniqueViolation) {
        return Some(Kind::Unique);
    }
    // Only SQLite reports numeric codes; PostgreSQL's SQLSTATEs (e.g. "23505") are never
    // plain small integers with these primary codes, but check the driver to be sure.
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        let code = db.code().and_then(|c| c.parse::<i64>().ok()).unwrap_or(0);
        if matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED) {
            return Some(Kind::Busy);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_errors_stay_backend_errors_whose_message_has_no_detail() {
        let e = db(sqlx::Error::Protocol(
            "SELECT secret FROM /var/lib/x".into(),
        ));
        assert!(matches!(e, StoreError::Backend(_)));
        assert_eq!(e.to_string(), "storage error");
        let e = conflict_as("app")(sqlx::Error::RowNotFound);
        assert!(matches!(e, StoreError::Backend(_)));
    }
}
