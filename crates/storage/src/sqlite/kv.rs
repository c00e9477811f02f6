//! KV's statements on SQLite. Values are JSON text; `Incr` checks `json_type` and the
//! 64-bit range itself, because SQLite would silently make an overflowing sum a float.
use sqlx::Sqlite;

use crate::repo::kv::KvSql;

impl KvSql for Sqlite {
    const GET: &'static str = "SELECT key, value, updated_at, expires_at FROM kv
     WHERE app = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)";
    const LIST: &'static str = "SELECT key, value, updated_at, expires_at FROM kv
     WHERE app = ?1 AND key >= ?2 AND (?3 IS NULL OR key < ?3) AND (?4 IS NULL OR key > ?4)
       AND (expires_at IS NULL OR expires_at > ?5)
     ORDER BY key LIMIT ?6";
    const DELETE_LIVE: &'static str =
        "DELETE FROM kv WHERE app = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)";
    const DELETE: &'static str = "DELETE FROM kv WHERE app = ?1 AND key = ?2";
    const SET: &'static str = "INSERT INTO kv (app, key, value, updated_at, expires_at)
     VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (app, key) DO UPDATE SET
         value = excluded.value, updated_at = excluded.updated_at,
         expires_at = excluded.expires_at";
    /// An expired entry counts as missing (starts from 0, loses its expiry); a live one keeps
    /// its expiry. The `WHERE` refuses a live non-integer, which changes no row.
    const INCR: &'static str = "INSERT INTO kv (app, key, value, updated_at, expires_at)
     VALUES (?1, ?2, ?3, ?4, NULL)
     ON CONFLICT (app, key) DO UPDATE SET
         value = CASE WHEN kv.expires_at IS NOT NULL AND kv.expires_at <= ?4
                      THEN ?3 ELSE CAST(kv.value AS INTEGER) + ?3 END,
         updated_at = ?4,
         expires_at = CASE WHEN kv.expires_at IS NOT NULL AND kv.expires_at <= ?4
                           THEN NULL ELSE kv.expires_at END
     WHERE (kv.expires_at IS NOT NULL AND kv.expires_at <= ?4)
        OR (json_type(kv.value) = 'integer'
            AND CASE WHEN ?3 >= 0 THEN CAST(kv.value AS INTEGER) <= 9223372036854775807 - ?3
                     ELSE CAST(kv.value AS INTEGER) >= -9223372036854775807 - 1 - ?3 END)";
    const PURGE_EXPIRED: &'static str =
        "DELETE FROM kv WHERE app = ?1 AND expires_at IS NOT NULL AND expires_at <= ?2";

    fn set_many() -> &'static str {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            let rows = vec!["(?, ?, ?, ?, ?)"; crate::repo::kv::SET_MANY_ROWS].join(", ");
            format!(
                "INSERT INTO kv (app, key, value, updated_at, expires_at) VALUES {rows}
     ON CONFLICT (app, key) DO UPDATE SET
         value = excluded.value, updated_at = excluded.updated_at,
         expires_at = excluded.expires_at"
            )
        });
        SQL.as_str()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use shared::event::KvWrite;
    use shared::{AppName, StoreError};
    use sqlx::SqlitePool;

    use crate::error::db;

    async fn store_with_app() -> (tempfile::TempDir, shared::Store, SqlitePool, AppName) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let store = crate::connect(&url).await.expect("connect");
        let pool = SqlitePool::connect(&url).await.expect("pool");
        let app = AppName::parse("shop").expect("app");
        store.apps.create(&app).await.expect("create app");
        (dir, store, pool, app)
    }

    async fn apply(pool: &SqlitePool, app: &AppName, writes: &[KvWrite]) -> Result<(), StoreError> {
        let mut tx = super::super::begin_write(pool).await?;
        crate::repo::kv::apply_kv::<sqlx::Sqlite>(&mut tx, app, writes).await?;
        tx.commit().await.map_err(db)
    }

    #[tokio::test]
    async fn twenty_concurrent_increments_through_apply_kv_all_count() {
        let (_dir, store, pool, app) = store_with_app().await;
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (pool, app) = (pool.clone(), app.clone());
                tokio::spawn(async move {
                    apply(
                        &pool,
                        &app,
                        &[KvWrite::Incr {
                            key: "n".into(),
                            by: 2,
                        }],
                    )
                    .await
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("join").expect("incr");
        }
        let entry = store.kv.get(&app, "n").await.expect("get").expect("entry");
        assert_eq!(entry.value, json!(40));
    }

    #[tokio::test]
    async fn an_increment_of_a_string_is_refused_and_rolls_back_the_whole_apply() {
        let (_dir, store, pool, app) = store_with_app().await;
        apply(
            &pool,
            &app,
            &[KvWrite::Set {
                key: "s".into(),
                value: json!("x"),
                ttl: None,
            }],
        )
        .await
        .expect("set");
        let err = apply(
            &pool,
            &app,
            &[
                KvWrite::Set {
                    key: "other".into(),
                    value: json!(1),
                    ttl: None,
                },
                KvWrite::Incr {
                    key: "s".into(),
                    by: 1,
                },
            ],
        )
        .await
        .expect_err("incr of a string");
        assert!(matches!(err, StoreError::Conflict("kv integer")), "{err:?}");
        assert_eq!(
            store
                .kv
                .get(&app, "s")
                .await
                .expect("get")
                .expect("kept")
                .value,
            json!("x")
        );
        assert!(store.kv.get(&app, "other").await.expect("get").is_none());
    }

    #[tokio::test]
    async fn writes_for_a_missing_app_are_not_found() {
        let (_dir, _store, pool, _app) = store_with_app().await;
        let ghost = AppName::parse("ghost").expect("app");
        let err = apply(
            &pool,
            &ghost,
            &[KvWrite::Incr {
                key: "n".into(),
                by: 1,
            }],
        )
        .await
        .expect_err("no app");
        assert!(matches!(err, StoreError::NotFound("app")), "{err:?}");
    }
}
