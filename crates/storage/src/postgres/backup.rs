//! The backup's statements on PostgreSQL: the snapshot is a `REPEATABLE READ READ ONLY`
//! transaction; `jsonb` travels as text.
use sqlx::Postgres;

use crate::backup::{BackupSql, Kind};

impl BackupSql for Postgres {
    const BEGIN_SNAPSHOT: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    const DELETE_APP: &'static str = "DELETE FROM apps WHERE name = $1";
    const APP_OBJECTS: &'static str = "SELECT object FROM blobs WHERE app = $1";

    fn select_col(name: &str, kind: Kind) -> String {
        match kind {
            Kind::Json => format!("\"{name}\"::text AS \"{name}\""),
            _ => format!("\"{name}\""),
        }
    }

    fn placeholder(n: usize, kind: Kind) -> String {
        match kind {
            Kind::Json => format!("${n}::jsonb"),
            _ => format!("${n}"),
        }
    }
}
