//! `server_meta`'s statements on SQLite; the write lock serializes the checks.
use sqlx::Sqlite;

use crate::meta::MetaSql;

impl MetaSql for Sqlite {
    const GET: &'static str = "SELECT value FROM server_meta WHERE key = ?";
    const SET: &'static str = "INSERT INTO server_meta (key, value) VALUES (?, ?)
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";
    const OTHER_KEYS: &'static str = "SELECT address, heartbeat_at, heartbeat_ms FROM nodes
     WHERE key_fingerprint <> ? ORDER BY started_at, id";
    const ONE_SECRET: &'static str = "SELECT app, name, nonce, ciphertext FROM app_secrets LIMIT 1";
    const DELETE_TOKEN: &'static str = "DELETE FROM api_tokens WHERE secret_hash = ?";
    const INSERT_TOKEN: &'static str = "INSERT INTO api_tokens (id, name, secret_hash, created_at)
     VALUES (?, ?, ?, ?) ON CONFLICT (secret_hash) DO NOTHING";
}
