//! Blob names: each (app, name) points at one object of the object store.
//!
//! What must stay true:
//! - every statement is scoped by app, prefixes are ranges, never `LIKE` patterns;
//! - whenever a name stops pointing at an object (overwritten or deleted), that object's
//!   key is handed back to the caller, who removes it after the commit. Two transactions
//!   may write one name at once (PostgreSQL's READ COMMITTED), so a put locks the existing
//!   row before replacing it, and inserts only when no row exists (`ON CONFLICT DO
//!   NOTHING`, then lock again): the object each writer replaces is exactly the one it
//!   hands back, none is forgotten while referenced, none stays referenced after removal.
use async_trait::async_trait;
use shared::event::BlobWrite;
use shared::store::{BlobMeta, BlobRepository};
use shared::{AppName, StoreError};
use sqlx::Pool;

use crate::error::db;
use crate::sql::{Cols, Db, sql};
use crate::{app_missing, now, prefix_end};

/// Lock-or-insert rounds before giving up; a second round only happens when another
/// transaction inserted the same name at the same moment, a third when it was also deleted.
const PUT_ROUNDS: usize = 4;

/// The statements of `Blobs`, with their arguments in placeholder order.
pub(crate) trait BlobsSql: Db {
    /// (app, name) -> a meta row (name, object, size, content_type, updated_at)
    const GET: &'static str;
    /// (app, prefix, prefix end or NULL, after or NULL, limit) -> meta rows by name
    const LIST: &'static str;
    /// (app, name) -> object it pointed at
    const DELETE: &'static str;
    /// (app, name) -> object, locked until the commit
    const LOCK_OLD: &'static str;
    /// (app, name, object, size, content_type, updated_at)
    const UPDATE: &'static str;
    /// (app, name, object, size, content_type, updated_at): no row if the name exists.
    const INSERT_NEW: &'static str;
}

pub(crate) struct Blobs<DB: Db>(pub(crate) Pool<DB>);

fn row_to_meta(row: &impl Cols) -> Result<BlobMeta, StoreError> {
    Ok(BlobMeta {
        name: row.string("name")?,
        size: row.count("size")?,
        content_type: row.opt_string("content_type")?,
        object: row.string("object")?,
        updated_at: row.ts("updated_at")?,
    })
}

/// Point `name` at `object`; returns the object it pointed at before, if any.
async fn put_one<DB: BlobsSql>(
    conn: &mut DB::Connection,
    app: &AppName,
    name: &str,
    object: &str,
    size: i64,
    content_type: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let at = now();
    for _ in 0..PUT_ROUNDS {
        let old = sql::<DB>(DB::LOCK_OLD)
            .bind(app.as_str())
            .bind(name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
        let statement = if old.is_some() {
            DB::UPDATE
        } else {
            DB::INSERT_NEW
        };
        let written = sql::<DB>(statement)
            .bind(app.as_str())
            .bind(name)
            .bind(object)
            .bind(size)
            .bind(content_type)
            .bind(at)
            .execute(&mut *conn)
            .await
            .map_err(app_missing)?;
        match old {
            Some(old) => return Ok(Some(old.string("object")?)),
            None if written == 1 => return Ok(None),
            None => {}
        }
    }
    Err(StoreError::Busy)
}

/// Apply `writes` in order inside the caller's transaction. Returns the objects no longer
/// referenced: remove them once the transaction commits.
///
/// # Errors
/// `NotFound("app")` when the app does not exist; `Busy` when one name is raced past
/// `PUT_ROUNDS` rounds.
pub(crate) async fn apply_blobs<DB: BlobsSql>(
    conn: &mut DB::Connection,
    app: &AppName,
    writes: &[BlobWrite],
) -> Result<Vec<String>, StoreError> {
    let mut unreferenced = Vec::new();
    for write in writes {
        match write {
            BlobWrite::Put {
                name,
                object,
                size,
                content_type,
            } => {
                let size = i64::try_from(*size).map_err(StoreError::backend)?;
                let content_type = content_type.as_deref();
                let old = put_one::<DB>(conn, app, name, object, size, content_type).await?;
                unreferenced.extend(old.filter(|old| old != object));
            }
            BlobWrite::Delete { name } => {
                let old = delete_one::<DB>(&mut *conn, app, name).await?;
                unreferenced.extend(old);
            }
        }
    }
    Ok(unreferenced)
}

async fn delete_one<'c, DB: BlobsSql>(
    on: impl crate::sql::On<'c, DB> + 'c,
    app: &AppName,
    name: &str,
) -> Result<Option<String>, StoreError> {
    let row = sql::<DB>(DB::DELETE)
        .bind(app.as_str())
        .bind(name)
        .fetch_optional(on)
        .await
        .map_err(db)?;
    row.map(|row| row.string("object")).transpose()
}

#[async_trait]
impl<DB: BlobsSql> BlobRepository for Blobs<DB> {
    async fn get(&self, app: &AppName, name: &str) -> Result<Option<BlobMeta>, StoreError> {
        let row = sql::<DB>(DB::GET)
            .bind(app.as_str())
            .bind(name)
            .fetch_optional(&self.0)
            .await
            .map_err(db)?;
        row.as_ref().map(row_to_meta).transpose()
    }

    async fn list(
        &self,
        app: &AppName,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<BlobMeta>, StoreError> {
        let rows = sql::<DB>(DB::LIST)
            .bind(app.as_str())
            .bind(prefix)
            .bind(prefix_end(prefix))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.0)
            .await
            .map_err(db)?;
        rows.iter().map(row_to_meta).collect()
    }

    async fn delete(&self, app: &AppName, name: &str) -> Result<Option<String>, StoreError> {
        delete_one::<DB>(&self.0, app, name).await
    }
}

#[cfg(test)]
mod tests {
    use shared::{AppName, BlobWrite};
    use sqlx::{Pool, Postgres, Sqlite};

    use super::{BlobsSql, apply_blobs};
    use crate::testing::TestUrl;

    #[tokio::test]
    async fn concurrent_puts_of_one_name_hand_back_every_replaced_object_once_on_sqlite() {
        let db = TestUrl::sqlite();
        concurrent_puts_of_one_name_hand_back_every_replaced_object_once::<Sqlite>(&db.url).await;
        db.close().await;
    }

    #[tokio::test]
    async fn concurrent_puts_of_one_name_hand_back_every_replaced_object_once_on_postgres() {
        let db = TestUrl::postgres().await;
        concurrent_puts_of_one_name_hand_back_every_replaced_object_once::<Postgres>(&db.url).await;
        db.close().await;
    }

    async fn concurrent_puts_of_one_name_hand_back_every_replaced_object_once<DB: BlobsSql>(
        url: &str,
    ) {
        let store = crate::connect(url).await.expect("connect");
        let pool = Pool::<DB>::connect(url).await.expect("pool");
        let shop = AppName::parse("shop").expect("app");
        store.apps.create(&shop).await.expect("create");
        let puts: Vec<_> = (0..12)
            .map(|i| {
                let (pool, shop) = (pool.clone(), shop.clone());
                tokio::spawn(async move {
                    let mut tx = DB::begin_write(&pool).await.expect("begin");
                    let write = BlobWrite::Put {
                        name: "same".into(),
                        object: format!("shop/object-{i}"),
                        size: 1,
                        content_type: None,
                    };
                    let freed = apply_blobs::<DB>(&mut tx, &shop, &[write])
                        .await
                        .expect("apply");
                    tx.commit().await.expect("commit");
                    freed
                })
            })
            .collect();
        let mut freed = Vec::new();
        for put in puts {
            freed.extend(put.await.expect("join"));
        }
        let current = store
            .blobs
            .get(&shop, "same")
            .await
            .expect("get")
            .expect("named");
        freed.push(current.object);
        freed.sort();
        let mut all: Vec<String> = (0..12).map(|i| format!("shop/object-{i}")).collect();
        all.sort();
        assert_eq!(
            freed, all,
            "each object is either current or freed, exactly once"
        );
        pool.close().await;
        store.health.close().await;
    }
}
