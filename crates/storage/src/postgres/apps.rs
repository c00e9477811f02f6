//! Apps' statements on PostgreSQL.
use sqlx::Postgres;

use crate::repo::apps::AppsSql;

impl AppsSql for Postgres {
    const INSERT: &'static str = "INSERT INTO apps (name, created_at) VALUES ($1, $2)";
    const GET: &'static str = "SELECT name, created_at FROM apps WHERE name = $1";
    const LIST: &'static str = "SELECT name, created_at FROM apps ORDER BY name";
    const DELETE: &'static str = "DELETE FROM apps WHERE name = $1";
    const UNSCOPE: &'static str = "UPDATE api_tokens
     SET apps = TRIM(REPLACE(',' || apps || ',', ',' || $1 || ',', ','), ',')
     WHERE apps IS NOT NULL AND strpos(',' || apps || ',', ',' || $1 || ',') > 0";
}
