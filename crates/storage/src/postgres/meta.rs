//! `server_meta`'s statements on PostgreSQL; the row lock serializes the checks.
use sqlx::Postgres;

use crate::meta::MetaSql;

impl MetaSql for Postgres {
    const GET: &'static str = "SELECT value FROM server_meta WHERE key = $1 FOR UPDATE";
    const SET: &'static str = "INSERT INTO server_meta (key, value) VALUES ($1, $2)
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";
    const OTHER_KEYS: &'static str = "SELECT address, heartbeat_at, heartbeat_ms FROM nodes
     WHERE key_fingerprint <> $1 ORDER BY started_at, id";
    const ONE_SECRET: &'static str = "SELECT app, name, nonce, ciphertext FROM app_secrets LIMIT 1";
    const DELETE_TOKEN: &'static str = "DELETE FROM api_tokens WHERE secret_hash = $1";
    const INSERT_TOKEN: &'static str = "INSERT INTO api_tokens (id, name, secret_hash, created_at)
     VALUES ($1, $2, $3, $4) ON CONFLICT (secret_hash) DO NOTHING";
}
