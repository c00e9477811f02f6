//! Tokens' statements on PostgreSQL. A concurrent delete that committed first has removed
//! its row from what this one sees once it gets the lock.
use sqlx::Postgres;

use crate::repo::tokens::TokensSql;

impl TokensSql for Postgres {
    const INSERT: &'static str = "INSERT INTO api_tokens
         (id, name, secret_hash, role, apps, created_at) VALUES ($1, $2, $3, $4, $5, $6)";
    const FIND_BY_HASH: &'static str =
        "SELECT id, name, role, apps, created_at FROM api_tokens WHERE secret_hash = $1";
    const LIST: &'static str =
        "SELECT id, name, role, apps, created_at FROM api_tokens ORDER BY created_at, id";
    const LOCK_ADMINS_AND_TARGET: &'static str = "SELECT id, role FROM api_tokens
     WHERE role = 'admin' OR id = $1 ORDER BY id FOR UPDATE";
    const DELETE: &'static str = "DELETE FROM api_tokens WHERE id = $1";
    const COUNT: &'static str = "SELECT COUNT(*) AS n FROM api_tokens";
    const INSERT_SESSION: &'static str = "INSERT INTO dashboard_sessions
         (secret_hash, token_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";
    const DELETE_EXPIRED_SESSIONS: &'static str =
        "DELETE FROM dashboard_sessions WHERE expires_at < $1";
    const FIND_SESSION: &'static str =
        "SELECT t.id, t.name, t.role, t.apps, t.created_at, s.expires_at
         FROM dashboard_sessions s JOIN api_tokens t ON t.id = s.token_id
         WHERE s.secret_hash = $1";
    const DELETE_SESSION: &'static str = "DELETE FROM dashboard_sessions WHERE secret_hash = $1";
}
