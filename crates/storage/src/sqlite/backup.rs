//! The backup's statements on SQLite: a deferred transaction reads one WAL snapshot
//! (taken by its first read); JSON is stored as text.
use sqlx::Sqlite;

use crate::backup::{BackupSql, Kind};

impl BackupSql for Sqlite {
    const BEGIN_SNAPSHOT: &'static str = "BEGIN DEFERRED";
    const DELETE_APP: &'static str = "DELETE FROM apps WHERE name = ?";
    const APP_OBJECTS: &'static str = "SELECT object FROM blobs WHERE app = ?";

    fn select_col(name: &str, _: Kind) -> String {
        format!("\"{name}\"")
    }

    fn placeholder(_: usize, _: Kind) -> String {
        "?".to_owned()
    }
}
