//! KV's statements on PostgreSQL. Values are JSONB, bound and read as text; `Incr` checks
//! the 64-bit range in `numeric` before the `int8` arithmetic could fail, and the row lock
//! of `ON CONFLICT DO UPDATE` orders concurrent increments.
use sqlx::Postgres;

use crate::repo::kv::KvSql;

impl KvSql for Postgres {
    const GET: &'static str = "SELECT key, value::text AS value, updated_at, expires_at FROM kv
     WHERE app = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > $3)";
    const LIST: &'static str = r#"SELECT key, value::text AS value, updated_at, expires_at FROM kv
     WHERE app = $1 AND key >= ($2::text COLLATE "C")
       AND ($3::text IS NULL OR key < ($3::text COLLATE "C"))
       AND ($4::text IS NULL OR key > ($4::text COLLATE "C"))
       AND (expires_at IS NULL OR expires_at > $5)
     ORDER BY key LIMIT $6"#;
    const DELETE_LIVE: &'static str =
        "DELETE FROM kv WHERE app = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > $3)";
    const DELETE: &'static str = "DELETE FROM kv WHERE app = $1 AND key = $2";
    const SET: &'static str = "INSERT INTO kv (app, key, value, updated_at, expires_at)
     VALUES ($1, $2, $3::jsonb, $4, $5)
     ON CONFLICT (app, key) DO UPDATE SET
         value = excluded.value, updated_at = excluded.updated_at,
         expires_at = excluded.expires_at";
    /// An expired entry counts as missing (starts from 0, loses its expiry); a live one keeps
    /// its expiry. The `WHERE` (checked before the new values are computed) refuses a live
    /// value that is not a JSON integer, which changes no row.
    const INCR: &'static str = "INSERT INTO kv (app, key, value, updated_at, expires_at)
     VALUES ($1, $2, to_jsonb($3::int8), $4, NULL)
     ON CONFLICT (app, key) DO UPDATE SET
         value = CASE WHEN kv.expires_at IS NOT NULL AND kv.expires_at <= $4
                      THEN to_jsonb($3::int8)
                      ELSE to_jsonb((kv.value #>> '{}')::int8 + $3::int8) END,
         updated_at = $4,
         expires_at = CASE WHEN kv.expires_at IS NOT NULL AND kv.expires_at <= $4
                           THEN NULL ELSE kv.expires_at END
     WHERE (kv.expires_at IS NOT NULL AND kv.expires_at <= $4)
        OR CASE WHEN jsonb_typeof(kv.value) <> 'number' THEN false
                WHEN (kv.value #>> '{}') !~ '^-?[0-9]+$' THEN false
                ELSE (kv.value #>> '{}')::numeric + $3::numeric
                     BETWEEN -9223372036854775808 AND 9223372036854775807 END";
    const PURGE_EXPIRED: &'static str =
        "DELETE FROM kv WHERE app = $1 AND expires_at IS NOT NULL AND expires_at <= $2";

    fn set_many() -> &'static str {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            let rows: Vec<String> = (0..crate::repo::kv::SET_MANY_ROWS)
                .map(|i| {
                    let n = i * 5;
                    format!(
                        "(${}, ${}, ${}::jsonb, ${}, ${})",
                        n + 1,
                        n + 2,
                        n + 3,
                        n + 4,
                        n + 5
                    )
                })
                .collect();
            format!(
                "INSERT INTO kv (app, key, value, updated_at, expires_at) VALUES {}
     ON CONFLICT (app, key) DO UPDATE SET
         value = excluded.value, updated_at = excluded.updated_at,
         expires_at = excluded.expires_at",
                rows.join(", ")
            )
        });
        SQL.as_str()
    }
}
