//! Config's, secrets' and the mailbox's statements on PostgreSQL. JSON columns are JSONB, bound and read as text.
use sqlx::Postgres;

use crate::repo::settings::SettingsSql;

impl SettingsSql for Postgres {
    const CONFIG_GET: &'static str =
        "SELECT value::text AS value FROM app_config WHERE app = $1 AND key = $2";
    const CONFIG_SET: &'static str =
        "INSERT INTO app_config (app, key, value) VALUES ($1, $2, $3::jsonb)
     ON CONFLICT (app, key) DO UPDATE SET value = excluded.value";
    const CONFIG_DELETE: &'static str = "DELETE FROM app_config WHERE app = $1 AND key = $2";
    const CONFIG_LIST: &'static str =
        "SELECT key, value::text AS value FROM app_config WHERE app = $1 ORDER BY key";
    const SECRET_GET: &'static str =
        "SELECT nonce, ciphertext FROM app_secrets WHERE app = $1 AND name = $2";
    const SECRET_SET: &'static str =
        "INSERT INTO app_secrets (app, name, nonce, ciphertext, updated_at)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (app, name) DO UPDATE SET
         nonce = excluded.nonce, ciphertext = excluded.ciphertext,
         updated_at = excluded.updated_at";
    const SECRET_DELETE: &'static str = "DELETE FROM app_secrets WHERE app = $1 AND name = $2";
    const SECRET_NAMES: &'static str = "SELECT name FROM app_secrets WHERE app = $1 ORDER BY name";
    const MAIL_INSERT: &'static str =
        "INSERT INTO mailbox (id, app, message, created_at) VALUES ($1, $2, $3::jsonb, $4)";
    const MAIL_LIST: &'static str =
        "SELECT message::text AS message, created_at FROM mailbox WHERE app = $1
     ORDER BY id DESC LIMIT $2";
}
