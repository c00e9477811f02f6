//! HTTP idempotency keys, once for both backends (`shared::store::IdempotencyRepository`
//! says what must stay true).
//!
//! A key's row is `running` from `claim` until the run ends: then it is either answered in
//! the run's effects transaction (`answer`, called by the outbox) or released (deleted).
//! Every row has an expiry: a running row's is the end of the longest run the ingress
//! waits for, an answered row's the end of its trigger's TTL. An expired row counts as
//! absent: `claim` takes it over in the one statement that inserts, and deletes a bounded
//! number of other expired rows as it goes, so the table needs no sweeper of its own.
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use shared::store::{Claimed, IdempotencyRepository, KeyAnswer, KeyHold, StoredAnswer};
use shared::{AppName, StoreError, TriggerId};
use sqlx::Pool;

use crate::error::db;
use crate::now;
use crate::sql::{Cols, Db, sql};

/// How many other expired rows one claim deletes at most.
pub(crate) const PURGE_BATCH: i64 = 100;

/// The statements of `Idempotency`, with their arguments in placeholder order.
pub(crate) trait IdempotencySql: Db {
    /// (now, limit): delete up to `limit` expired rows, skipping rows another transaction
    /// holds.
    const PURGE_EXPIRED: &'static str;
    /// (app, trigger_id, key, fingerprint, holder, now, expires_at): insert a `running`
    /// row, or take over the key's row if it expired; no row changed if the key is live.
    const TAKE: &'static str;
    /// (app, trigger_id, key) -> fingerprint, state, status, headers, body
    const FIND: &'static str;
    /// (status, headers, body, expires_at, app, trigger_id, key, holder): answer the key
    /// `holder` still holds.
    const ANSWER: &'static str;
    /// (app, trigger_id, key, holder): delete the key `holder` still holds, unanswered.
    const RELEASE: &'static str;
    /// (app, trigger_id) -> n
    const COUNT: &'static str;
}

pub(crate) struct Idempotency<DB: Db>(pub(crate) Pool<DB>);

#[async_trait]
impl<DB: IdempotencySql> IdempotencyRepository for Idempotency<DB> {
    async fn claim(
        &self,
        hold: &KeyHold,
        fingerprint: &str,
        running_until: DateTime<Utc>,
    ) -> Result<Claimed, StoreError> {
        let now = now();
        let mut tx = DB::begin_write(&self.0).await?;
        sql::<DB>(DB::PURGE_EXPIRED)
            .bind(now)
            .bind(PURGE_BATCH)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let taken = sql::<DB>(DB::TAKE)
            .bind(hold.app.as_str())
            .bind(hold.trigger.0)
            .bind(hold.key.as_str())
            .bind(fingerprint)
            .bind(hold.holder.0)
            .bind(now)
            .bind(running_until)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if taken == 1 {
            tx.commit().await.map_err(db)?;
            return Ok(Claimed::Run);
        }
        let row = sql::<DB>(DB::FIND)
            .bind(hold.app.as_str())
            .bind(hold.trigger.0)
            .bind(hold.key.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        // Released between the two statements: another run had it a moment ago.
        let Some(row) = row else {
            return Ok(Claimed::Running);
        };
        if row.text("fingerprint")? != fingerprint {
            return Ok(Claimed::Reused);
        }
        if row.text("state")? != "done" {
            return Ok(Claimed::Running);
        }
        let status = u16::try_from(row.int4("status")?).map_err(StoreError::backend)?;
        let headers: Vec<(String, String)> = row.json("headers")?;
        Ok(Claimed::Answered(StoredAnswer {
            status,
            headers,
            body: Bytes::from(row.bytes("body")?),
        }))
    }

    async fn release(&self, hold: &KeyHold) -> Result<(), StoreError> {
        sql::<DB>(DB::RELEASE)
            .bind(hold.app.as_str())
            .bind(hold.trigger.0)
            .bind(hold.key.as_str())
            .bind(hold.holder.0)
            .execute(&self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn count(&self, app: &AppName, trigger: TriggerId) -> Result<u64, StoreError> {
        sql::<DB>(DB::COUNT)
            .bind(app.as_str())
            .bind(trigger.0)
            .fetch_one(&self.0)
            .await
            .map_err(db)?
            .count("n")
    }
}

/// Store `answer` on the caller's transaction (the run's effects transaction).
///
/// # Errors
/// `Conflict("idempotency key")` when the run no longer holds its key: the caller rolls
/// back, so effects are never committed without the answer a replay would send.
pub(crate) async fn answer<DB: IdempotencySql>(
    conn: &mut DB::Connection,
    answer: &KeyAnswer<'_>,
) -> Result<(), StoreError> {
    let headers = crate::outbox::json(&answer.answer.headers)?;
    let answered = sql::<DB>(DB::ANSWER)
        .bind(i32::from(answer.answer.status))
        .bind(headers)
        .bind(answer.answer.body.as_ref())
        .bind(answer.expires_at)
        .bind(answer.hold.app.as_str())
        .bind(answer.hold.trigger.0)
        .bind(answer.hold.key.as_str())
        .bind(answer.hold.holder.0)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    if answered == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict("idempotency key"))
    }
}
