//! KV entries. Values are JSON; an entry whose `expires_at` is at or before now is
//! invisible to every read and is overwritten by the next write of its key.
//!
//! What must stay true:
//! - every statement is scoped by app; prefixes are ranges (`key >= p AND key < end`),
//!   never `LIKE` patterns, so `%`, `_` and `\` in keys are plain characters;
//! - `Incr` is one upsert whose arithmetic runs in SQL on the stored integer, so
//!   concurrent increments never lose an update; a stored value that is not a JSON
//!   integer, or a sum outside the 64-bit range, refuses the increment with
//!   `Conflict("kv integer")` and is left as it was;
//! - writes only happen through `apply_kv` (or `apply_merged`), inside the caller's
//!   transaction;
//! - `merge` combines the writes of several events only when applying the result is the
//!   same as applying each event's writes in order: per key, increments of one sign (a
//!   prefix of them is then in range whenever their sum is) or sets and deletes (the last
//!   one wins); a key both set and incremented is not merged. Whether the merged writes
//!   succeed is the same as whether every event's would: `apply_merged` fails when any
//!   part would have, and the caller then applies event by event.
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use shared::event::KvWrite;
use shared::store::{KvEntry, KvRepository};
use shared::{AppName, StoreError};
use sqlx::Pool;

use crate::error::db;
use crate::sql::{Cols, Db, sql};
use crate::{app_missing, expiry, now, prefix_end};

/// The statements of `Kv`, with their arguments in placeholder order. Values go in and
/// come out as JSON text.
pub(crate) trait KvSql: Db {
    /// (app, key, now) -> an entry row (key, value, updated_at, expires_at) if live
    const GET: &'static str;
    /// (app, prefix, prefix end or NULL, after or NULL, now, limit) -> live entry rows by key
    const LIST: &'static str;
    /// (app, key, now): delete a live entry.
    const DELETE_LIVE: &'static str;
    /// (app, key)
    const DELETE: &'static str;
    /// (app, key, value, updated_at, expires_at): insert or replace.
    const SET: &'static str;
    /// (app, key, by, now): no row changed when the live value is no integer or the sum
    /// would overflow; an expired entry counts as missing.
    const INCR: &'static str;
    /// (app, now): drop the app's expired entries.
    const PURGE_EXPIRED: &'static str;
    /// `SET` of `SET_MANY_ROWS` entries in one statement: (app, key, value, updated_at,
    /// expires_at) per entry, no key twice.
    fn set_many() -> &'static str;

    /// Write `sets` (one app's, no key twice, in key order), each updated at `at`, on
    /// `conn`; a missing app is `NotFound("app")`. By default one `set_many` per
    /// `SET_MANY_ROWS` of them and one `SET` per entry left over.
    fn write_sets<'c>(
        conn: &'c mut Self::Connection,
        app: &'c AppName,
        at: DateTime<Utc>,
        sets: Vec<SetRow<'c>>,
    ) -> Writing<'c> {
        Box::pin(async move {
            let mut chunks = sets.chunks_exact(SET_MANY_ROWS);
            for chunk in &mut chunks {
                let mut query = sql::<Self>(Self::set_many());
                for row in chunk {
                    query = query
                        .bind(app.as_str())
                        .bind(row.key)
                        .bind(row.json.as_str())
                        .bind(at)
                        .bind(row.expires);
                }
                query.execute(&mut *conn).await.map_err(app_missing)?;
            }
            for row in chunks.remainder() {
                sql::<Self>(Self::SET)
                    .bind(app.as_str())
                    .bind(row.key)
                    .bind(row.json.as_str())
                    .bind(at)
                    .bind(row.expires)
                    .execute(&mut *conn)
                    .await
                    .map_err(app_missing)?;
            }
            Ok(())
        })
    }

    /// Where `get_blocking` reads: connections kept for the blocking readers.
    type Reader: BlockingGet;
    /// The reader of the store on `pool` (opens nothing yet).
    fn reader(pool: &Pool<Self>) -> Self::Reader;
}

/// A backend's `get_blocking`: one live entry, read on the calling thread's behalf with
/// `GET`'s rules (app, key, not expired), on connections of its own.
pub(crate) trait BlockingGet: Send + Sync {
    /// `None` when this store reads through the pool after all (an in-memory SQLite
    /// database, which no other connection can open).
    fn get(
        &self,
        rt: &tokio::runtime::Handle,
        app: &AppName,
        key: &str,
    ) -> Option<Result<Option<KvEntry>, StoreError>>;
}

/// Entries per multi-row `SET`.
pub(crate) const SET_MANY_ROWS: usize = 64;

/// One merged set, ready to bind: its key, its value as JSON text, its expiry.
pub(crate) struct SetRow<'a> {
    pub(crate) key: &'a str,
    pub(crate) json: String,
    pub(crate) expires: Option<DateTime<Utc>>,
}

/// A running write of `KvSql::write_sets`.
pub(crate) type Writing<'c> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send + 'c>>;

/// One key's merged writes.
pub(crate) enum Merged<'a> {
    /// The sum of its increments, all of one sign.
    Incr(i64),
    /// Its last set or delete.
    Last(&'a KvWrite),
}

/// The KV writes of several events, merged per key (see the module's rules), in key order
/// (app, then key): concurrent group commits then take the keys' row locks in one order
/// and cannot deadlock on each other (PostgreSQL runs several side by side).
pub(crate) struct MergedKv<'a> {
    keys: Vec<(&'a AppName, &'a str, Merged<'a>)>,
}

impl MergedKv<'_> {
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Each key's merged writes (no key twice), for a backend's own statements.
    pub(crate) fn keys(&self) -> &[(&AppName, &str, Merged<'_>)] {
        &self.keys
    }
}

/// Merge the writes of events, in order; `None` when they cannot be merged.
///
/// The writes are sorted by (app, key), keeping their order within a key (a stable sort),
/// and each key's run is folded: no hash of every key (a batch's writes are a few dozen).
pub(crate) fn merge<'a>(
    events: impl IntoIterator<Item = (&'a AppName, &'a [KvWrite])>,
) -> Option<MergedKv<'a>> {
    fn key_of(write: &KvWrite) -> &str {
        match write {
            KvWrite::Set { key, .. } | KvWrite::Delete { key } | KvWrite::Incr { key, .. } => key,
        }
    }
    let mut writes: Vec<(&'a AppName, &'a KvWrite)> = events
        .into_iter()
        .flat_map(|(app, writes)| writes.iter().map(move |w| (app, w)))
        .collect();
    writes.sort_by(|a, b| (a.0.as_str(), key_of(a.1)).cmp(&(b.0.as_str(), key_of(b.1))));
    let mut keys: Vec<(&'a AppName, &'a str, Merged<'a>)> = Vec::with_capacity(writes.len());
    for (app, write) in writes {
        let key = key_of(write);
        let last = keys
            .last_mut()
            .filter(|(a, k, _)| a.as_str() == app.as_str() && *k == key);
        let next = match (last.as_ref().map(|l| &l.2), write) {
            (None, KvWrite::Incr { by, .. }) => Merged::Incr(*by),
            (None | Some(Merged::Last(_)), KvWrite::Set { .. } | KvWrite::Delete { .. }) => {
                Merged::Last(write)
            }
            (Some(Merged::Incr(sum)), KvWrite::Incr { by, .. })
                if (*sum >= 0) == (*by >= 0) || *sum == 0 || *by == 0 =>
            {
                Merged::Incr(sum.checked_add(*by)?)
            }
            _ => return None,
        };
        match last {
            Some(last) => last.2 = next,
            None => keys.push((app, key, next)),
        }
    }
    Some(MergedKv { keys })
}

/// Apply merged writes on `conn`: sets in multi-row statements, one increment per key,
/// then drop each app's expired entries once.
///
/// # Errors
/// As `apply_kv`: an increment that meets a non-integer or leaves the range refuses the
/// whole call (`Conflict("kv integer")`); the caller rolls back and applies per event.
pub(crate) async fn apply_merged<DB: KvSql>(
    conn: &mut DB::Connection,
    merged: &MergedKv<'_>,
) -> Result<(), StoreError> {
    if merged.is_empty() {
        return Ok(());
    }
    let at = now();
    // Per app (the keys come in app order), its sets in key order.
    let mut sets: Vec<(&AppName, Vec<SetRow<'_>>)> = Vec::new();
    for (app, key, write) in &merged.keys {
        match write {
            Merged::Last(KvWrite::Set { value, ttl, .. }) => {
                let row = SetRow {
                    key,
                    json: serde_json::to_string(value).map_err(StoreError::backend)?,
                    expires: expiry(at, *ttl),
                };
                match sets.last_mut() {
                    Some((last, rows)) if *last == *app => rows.push(row),
                    _ => sets.push((*app, vec![row])),
                }
            }
            Merged::Last(_) => {
                sql::<DB>(DB::DELETE)
                    .bind(app.as_str())
                    .bind(*key)
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?;
            }
            Merged::Incr(by) => {
                let changed = sql::<DB>(DB::INCR)
                    .bind(app.as_str())
                    .bind(*key)
                    .bind(*by)
                    .bind(at)
                    .execute(&mut *conn)
                    .await
                    .map_err(app_missing)?;
                if changed == 0 {
                    return Err(StoreError::Conflict("kv integer"));
                }
            }
        }
    }
    for (app, rows) in sets {
        DB::write_sets(&mut *conn, app, at, rows).await?;
    }
    let mut apps: Vec<&str> = merged.keys.iter().map(|(app, _, _)| app.as_str()).collect();
    apps.sort_unstable();
    apps.dedup();
    for app in apps {
        sql::<DB>(DB::PURGE_EXPIRED)
            .bind(app)
            .bind(at)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    Ok(())
}

pub(crate) struct Kv<DB: KvSql> {
    pool: Pool<DB>,
    reader: DB::Reader,
}

impl<DB: KvSql> Kv<DB> {
    pub(crate) fn new(pool: Pool<DB>) -> Self {
        let reader = DB::reader(&pool);
        Self { pool, reader }
    }
}

pub(crate) fn row_to_entry(row: &impl Cols) -> Result<KvEntry, StoreError> {
    Ok(KvEntry {
        key: row.string("key")?,
        value: row.json("value")?,
        updated_at: row.ts("updated_at")?,
        expires_at: row.opt_ts("expires_at")?,
    })
}

/// Apply `writes` in order inside the caller's transaction, then drop the app's expired
/// entries.
///
/// # Errors
/// `NotFound("app")` when the app does not exist; `Conflict("kv integer")` when `Incr`
/// meets a live value that is not a JSON integer.
pub(crate) async fn apply_kv<DB: KvSql>(
    conn: &mut DB::Connection,
    app: &AppName,
    writes: &[KvWrite],
) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Ok(());
    }
    let at = now();
    for write in writes {
        match write {
            KvWrite::Set { key, value, ttl } => {
                let json = serde_json::to_string(value).map_err(StoreError::backend)?;
                sql::<DB>(DB::SET)
                    .bind(app.as_str())
                    .bind(key)
                    .bind(json)
                    .bind(at)
                    .bind(expiry(at, *ttl))
                    .execute(&mut *conn)
                    .await
                    .map_err(app_missing)?;
            }
            KvWrite::Delete { key } => {
                sql::<DB>(DB::DELETE)
                    .bind(app.as_str())
                    .bind(key)
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?;
            }
            KvWrite::Incr { key, by } => {
                let changed = sql::<DB>(DB::INCR)
                    .bind(app.as_str())
                    .bind(key)
                    .bind(*by)
                    .bind(at)
                    .execute(&mut *conn)
                    .await
                    .map_err(app_missing)?;
                if changed == 0 {
                    return Err(StoreError::Conflict("kv integer"));
                }
            }
        }
    }
    sql::<DB>(DB::PURGE_EXPIRED)
        .bind(app.as_str())
        .bind(at)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}

#[async_trait]
impl<DB: KvSql> KvRepository for Kv<DB> {
    async fn get(&self, app: &AppName, key: &str) -> Result<Option<KvEntry>, StoreError> {
        let row = sql::<DB>(DB::GET)
            .bind(app.as_str())
            .bind(key)
            .bind(now())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(row_to_entry).transpose()
    }

    fn get_blocking(
        &self,
        rt: &tokio::runtime::Handle,
        app: &AppName,
        key: &str,
    ) -> Result<Option<KvEntry>, StoreError> {
        self.reader
            .get(rt, app, key)
            .unwrap_or_else(|| rt.block_on(self.get(app, key)))
    }

    async fn list(
        &self,
        app: &AppName,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<KvEntry>, StoreError> {
        let rows = sql::<DB>(DB::LIST)
            .bind(app.as_str())
            .bind(prefix)
            .bind(prefix_end(prefix))
            .bind(after)
            .bind(now())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(row_to_entry).collect()
    }

    async fn delete(&self, app: &AppName, key: &str) -> Result<bool, StoreError> {
        let deleted = sql::<DB>(DB::DELETE_LIVE)
            .bind(app.as_str())
            .bind(key)
            .bind(now())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(deleted > 0)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use shared::AppName;
    use shared::event::KvWrite;

    use super::{Merged, merge};

    fn incr(key: &str, by: i64) -> KvWrite {
        KvWrite::Incr {
            key: key.into(),
            by,
        }
    }

    fn set(key: &str, v: i64) -> KvWrite {
        KvWrite::Set {
            key: key.into(),
            value: json!(v),
            ttl: None,
        }
    }

    #[test]
    fn increments_of_one_sign_add_up_the_last_set_or_delete_wins_and_keys_come_in_order() {
        let (a, b) = (AppName::parse("a").unwrap(), AppName::parse("b").unwrap());
        let e1 = [incr("n", 1), set("x", 1)];
        let e2 = [incr("n", 2), KvWrite::Delete { key: "x".into() }];
        let e3 = [incr("n", 0), incr("n", 4), set("y", 3)];
        let other = [incr("n", -1)];
        let merged = merge([
            (&a, &e1[..]),
            (&a, &e2[..]),
            (&b, &other[..]),
            (&a, &e3[..]),
        ])
        .expect("mergeable");
        let keys: Vec<(&str, &str)> = merged
            .keys
            .iter()
            .map(|(app, key, _)| (app.as_str(), *key))
            .collect();
        // In key order, not in the order first written: every batch locks keys alike.
        assert_eq!(keys, [("a", "n"), ("a", "x"), ("a", "y"), ("b", "n")]);
        assert!(matches!(merged.keys[0].2, Merged::Incr(7)));
        assert!(matches!(
            merged.keys[1].2,
            Merged::Last(KvWrite::Delete { .. })
        ));
        assert!(matches!(merged.keys[3].2, Merged::Incr(-1)));
        assert!(merge(std::iter::empty()).expect("nothing").is_empty());
    }

    #[test]
    fn mixed_signs_a_set_and_an_increment_of_one_key_or_an_overflow_do_not_merge() {
        let a = AppName::parse("a").unwrap();
        let (up, down) = ([incr("n", 5)], [incr("n", -1)]);
        assert!(merge([(&a, &up[..]), (&a, &down[..])]).is_none());
        let (s, i) = ([set("n", 1)], [incr("n", 1)]);
        assert!(merge([(&a, &s[..]), (&a, &i[..])]).is_none());
        assert!(merge([(&a, &i[..]), (&a, &s[..])]).is_none());
        let big = [incr("n", i64::MAX), incr("n", 1)];
        assert!(merge([(&a, &big[..])]).is_none());
        let zero_first = [incr("n", 0), incr("n", -3)];
        assert!(matches!(
            merge([(&a, &zero_first[..])])
                .expect("zero has no sign")
                .keys[0]
                .2,
            Merged::Incr(-3)
        ));
    }
}
