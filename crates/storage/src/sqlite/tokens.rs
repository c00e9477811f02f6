//! Tokens' statements on SQLite. A delete runs under the write lock (`BEGIN IMMEDIATE`),
//! which already keeps every other delete out.
use sqlx::Sqlite;

use crate::repo::tokens::TokensSql;

impl TokensSql for Sqlite {
    const INSERT: &'static str = "INSERT INTO api_tokens
         (id, name, secret_hash, role, apps, created_at) VALUES (?, ?, ?, ?, ?, ?)";
    const FIND_BY_HASH: &'static str =
        "SELECT id, name, role, apps, created_at FROM api_tokens WHERE secret_hash = ?";
    const LIST: &'static str =
        "SELECT id, name, role, apps, created_at FROM api_tokens ORDER BY created_at, id";
    const LOCK_ADMINS_AND_TARGET: &'static str =
        "SELECT id, role FROM api_tokens WHERE role = 'admin' OR id = ? ORDER BY id";
    const DELETE: &'static str = "DELETE FROM api_tokens WHERE id = ?";
    const COUNT: &'static str = "SELECT COUNT(*) AS n FROM api_tokens";
    const INSERT_SESSION: &'static str = "INSERT INTO dashboard_sessions
         (secret_hash, token_id, created_at, expires_at) VALUES (?, ?, ?, ?)";
    const DELETE_EXPIRED_SESSIONS: &'static str =
        "DELETE FROM dashboard_sessions WHERE expires_at < ?";
    const FIND_SESSION: &'static str =
        "SELECT t.id, t.name, t.role, t.apps, t.created_at, s.expires_at
         FROM dashboard_sessions s JOIN api_tokens t ON t.id = s.token_id
         WHERE s.secret_hash = ?";
    const DELETE_SESSION: &'static str = "DELETE FROM dashboard_sessions WHERE secret_hash = ?";
}
