//! Apps' statements on SQLite.
use sqlx::Sqlite;

use crate::repo::apps::AppsSql;

impl AppsSql for Sqlite {
    const INSERT: &'static str = "INSERT INTO apps (name, created_at) VALUES (?, ?)";
    const GET: &'static str = "SELECT name, created_at FROM apps WHERE name = ?";
    const LIST: &'static str = "SELECT name, created_at FROM apps ORDER BY name";
    const DELETE: &'static str = "DELETE FROM apps WHERE name = ?";
    const UNSCOPE: &'static str = "UPDATE api_tokens
     SET apps = TRIM(REPLACE(',' || apps || ',', ',' || ?1 || ',', ','), ',')
     WHERE apps IS NOT NULL AND instr(',' || apps || ',', ',' || ?1 || ',') > 0";
}
