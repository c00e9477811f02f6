//! SQLite: the embedded default. One file in WAL mode; every write transaction starts with
//! `BEGIN IMMEDIATE`, so it takes the write lock up front and waits (busy timeout) instead
//! of failing when a read would have to be upgraded to a write.
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use shared::{Store, StoreError};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Pool, Sqlite, Transaction};
use uuid::Uuid;

use crate::error::db;

mod apps;
mod backup;
mod blobs;
pub(crate) use blobs::default_blob_dir;
mod dead_letters;
mod idempotency;
mod invocations;
mod kv;
mod limits;
mod meta;
mod nodes;
mod outbox;
mod realtime;
mod scripts;
mod settings;
mod tokens;
mod triggers;

/// The embedded migrations as (file, version, description, SQL), in order; a unit test
/// checks the files against the folder and the other backend's list.
pub(crate) const MIGRATIONS: &[(&str, i64, &str, &str)] = &[
    (
        "0001_init.sql",
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        "0002_events.sql",
        2,
        "events",
        include_str!("../../migrations/sqlite/0002_events.sql"),
    ),
    (
        "0003_data.sql",
        3,
        "data",
        include_str!("../../migrations/sqlite/0003_data.sql"),
    ),
    (
        "0004_server_meta.sql",
        4,
        "server_meta",
        include_str!("../../migrations/sqlite/0004_server_meta.sql"),
    ),
    (
        "0005_token_scopes.sql",
        5,
        "token_scopes",
        include_str!("../../migrations/sqlite/0005_token_scopes.sql"),
    ),
    (
        "0006_invocation_drops.sql",
        6,
        "invocation_drops",
        include_str!("../../migrations/sqlite/0006_invocation_drops.sql"),
    ),
    (
        "0007_limits.sql",
        7,
        "limits",
        include_str!("../../migrations/sqlite/0007_limits.sql"),
    ),
    (
        "0008_http_idempotency.sql",
        8,
        "http_idempotency",
        include_str!("../../migrations/sqlite/0008_http_idempotency.sql"),
    ),
    (
        "0009_realtime.sql",
        9,
        "realtime",
        include_str!("../../migrations/sqlite/0009_realtime.sql"),
    ),
    (
        "0010_sessions.sql",
        10,
        "sessions",
        include_str!("../../migrations/sqlite/0010_sessions.sql"),
    ),
    (
        "0011_nodes.sql",
        11,
        "nodes",
        include_str!("../../migrations/sqlite/0011_nodes.sql"),
    ),
    (
        "0012_lease_tokens.sql",
        12,
        "lease_tokens",
        include_str!("../../migrations/sqlite/0012_lease_tokens.sql"),
    ),
    (
        "0013_traces.sql",
        13,
        "traces",
        include_str!("../../migrations/sqlite/0013_traces.sql"),
    ),
    (
        "0014_queue_history.sql",
        14,
        "queue_history",
        include_str!("../../migrations/sqlite/0014_queue_history.sql"),
    ),
    (
        "0016_node_realtime_streams.sql",
        16,
        "node_realtime_streams",
        include_str!("../../migrations/sqlite/0016_node_realtime_streams.sql"),
    ),
    (
        "0017_outbox_claims.sql",
        17,
        "outbox_claims",
        include_str!("../../migrations/sqlite/0017_outbox_claims.sql"),
    ),
    (
        "0018_outbox_claim_in_place.sql",
        18,
        "outbox_claim_in_place",
        include_str!("../../migrations/sqlite/0018_outbox_claim_in_place.sql"),
    ),
];

const POOL_SIZE: u32 = 4;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";
#[cfg(test)]
const PING: &str = "SELECT 1";

/// The pool's settings.
///
/// No liveness ping on acquire: an open SQLite connection cannot break while idle, and
/// the ping is a hop to the connection's worker thread before every statement. No idle
/// timeout, no maximum lifetime and no minimum of connections either, for the same
/// reason: without them sqlx runs no maintenance task (its reaper's timer woke an idle
/// server every 10 minutes). The connections a busy spell opened (at most `POOL_SIZE`)
/// stay open, each with its page cache (SQLite's default, at most 2 MB).
fn pool_options() -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(POOL_SIZE)
        .min_connections(0)
        .test_before_acquire(false)
        .idle_timeout(None)
        .max_lifetime(None)
}

/// Open (creating if needed) the SQLite file that `url` names and migrate it.
pub(crate) async fn connect(url: &str, data: crate::DataParts) -> Result<Store, StoreError> {
    let path = file_path(url);
    if let Some(parent) = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        crate::private::create_dir_all(parent).map_err(StoreError::backend)?;
    }
    // Created private before SQLite opens it; the -wal and -shm files take its mode.
    if !path.is_empty() && !path.starts_with(':') {
        crate::private::touch(Path::new(path)).map_err(StoreError::backend)?;
    }
    let options = SqliteConnectOptions::from_str("sqlite:")
        .map_err(db)?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    let pool = pool_options().connect_with(options).await.map_err(db)?;
    crate::repo::migrator(MIGRATIONS)
        .run(&pool)
        .await
        .map_err(StoreError::backend)?;
    crate::meta::check_secret_key(&pool, &data.secrets, &data.key_fingerprint).await?;
    Ok(store(pool, data))
}

fn store(pool: SqlitePool, data: crate::DataParts) -> Store {
    // The outbox's wake-up, shared by every repository that inserts outbox rows.
    let inserted = Arc::new(tokio::sync::Notify::new());
    let triggers = Arc::new(triggers::SqliteTriggers::new(
        pool.clone(),
        inserted.clone(),
    ));
    let bus = Arc::new(shared::LocalBus::default());
    let limits = Arc::new(limits::SqliteLimits(pool.clone()));
    crate::repo::store(pool, data, MIGRATIONS, triggers, inserted, bus, limits)
}

/// `sqlite://p`, `sqlite:p` or `p`, without a `?query`.
fn file_path(url: &str) -> &str {
    let url = url.trim();
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    rest.split_once('?').map_or(rest, |(path, _)| path)
}

/// Start a write transaction that holds the write lock from its first statement.
async fn begin_write(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, StoreError> {
    pool.begin_with(BEGIN_WRITE).await.map_err(db)
}

/// Rows per multi-row statement, largest first: a batch goes in as one statement per
/// binary digit of its size (at most `CHUNKS[0]` rows each), and each connection prepares
/// no more than these few shapes of a statement.
const CHUNKS: [usize; 6] = [32, 16, 8, 4, 2, 1];

/// `rows` in runs of the sizes in `CHUNKS`, largest first, each with its shape: the index
/// of its size in `CHUNKS`.
fn chunked<T>(mut rows: &[T]) -> impl Iterator<Item = (usize, &[T])> {
    std::iter::from_fn(move || {
        let shape = CHUNKS.iter().position(|&n| n <= rows.len())?;
        let (chunk, rest) = rows.split_at(CHUNKS[shape]);
        rows = rest;
        Some((shape, chunk))
    })
}

/// A multi-row statement's SQL for each size in `CHUNKS`, built on first use.
struct MultiRow {
    /// The statement for n rows; only placeholders vary with n, never input.
    build: fn(usize) -> String,
    built: [std::sync::OnceLock<String>; CHUNKS.len()],
}

impl MultiRow {
    const fn new(build: fn(usize) -> String) -> Self {
        Self {
            build,
            built: [const { std::sync::OnceLock::new() }; CHUNKS.len()],
        }
    }

    /// The statement for a chunk of `shape` (from `chunked`).
    fn sql(&'static self, shape: usize) -> sqlx::AssertSqlSafe<&'static str> {
        let built = self.built[shape].get_or_init(|| (self.build)(CHUNKS[shape]));
        sqlx::AssertSqlSafe(built.as_str())
    }
}

/// `row` (a `VALUES` row of placeholders) `rows` times, comma separated.
fn values(row: &str, rows: usize) -> String {
    vec![row; rows].join(", ")
}

/// Timestamps are stored as fixed-width RFC 3339 text, so text order is time order.
fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(raw: &str) -> Result<DateTime<Utc>, StoreError> {
    if let Some(at) = parse_stored_ts(raw) {
        return Ok(at);
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(StoreError::backend)
}

/// The text `ts` writes (`2026-01-02T03:04:05.000001Z`), read field by field: every
/// claimed row has two, and chrono's general RFC 3339 parser costs more than the rest of
/// the row. `None` for any other text, which the general parser then reads (or refuses).
fn parse_stored_ts(raw: &str) -> Option<DateTime<Utc>> {
    let b = raw.as_bytes();
    if b.len() != 27 || [b[4], b[7], b[10], b[13], b[16], b[19], b[26]] != *b"--T::.Z" {
        return None;
    }
    let num = |from: usize, to: usize| {
        b[from..to].iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let date =
        chrono::NaiveDate::from_ymd_opt(i32::try_from(num(0, 4)?).ok()?, num(5, 7)?, num(8, 10)?)?;
    let time = chrono::NaiveTime::from_hms_micro_opt(
        num(11, 13)?,
        num(14, 16)?,
        num(17, 19)?,
        num(20, 26)?,
    )?;
    Some(date.and_time(time).and_utc())
}

impl crate::sql::Dialect for Sqlite {
    const BACKEND: &'static str = "sqlite";
    type Ts = String;
    type Id = String;

    fn ts(at: DateTime<Utc>) -> String {
        ts(at)
    }

    fn from_ts(raw: String) -> Result<DateTime<Utc>, StoreError> {
        parse_ts(&raw)
    }

    fn id(id: Uuid) -> String {
        id.to_string()
    }

    fn from_id(raw: String) -> Result<Uuid, StoreError> {
        raw.parse().map_err(StoreError::backend)
    }

    fn rows_affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn begin_write(pool: &Pool<Sqlite>) -> Result<Transaction<'static, Sqlite>, StoreError> {
        begin_write(pool).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_runs_no_maintenance_timer() {
        // sqlx spawns its reaper when either is set, and a task keeping a minimum of
        // connections when `min_connections` is above 0.
        let options = pool_options();
        assert_eq!(options.get_idle_timeout(), None);
        assert_eq!(options.get_max_lifetime(), None);
        assert_eq!(options.get_min_connections(), 0);
        assert!(!options.get_test_before_acquire());
    }

    #[test]
    fn urls_and_plain_paths_give_the_file_path() {
        assert_eq!(file_path("sqlite:///tmp/a/p.db"), "/tmp/a/p.db");
        assert_eq!(file_path("sqlite://data/p.db?mode=rwc"), "data/p.db");
        assert_eq!(file_path("sqlite:p.db"), "p.db");
        assert_eq!(file_path("./x/p.db"), "./x/p.db");
    }

    #[test]
    fn chunks_cover_every_row_once_in_the_fewest_statements() {
        for n in 0..=100 {
            let rows: Vec<usize> = (0..n).collect();
            let sizes: Vec<usize> = chunked(&rows)
                .map(|(shape, chunk)| {
                    assert_eq!(
                        chunk.len(),
                        CHUNKS[shape],
                        "{n}: the chunk has its shape's size"
                    );
                    chunk.len()
                })
                .collect();
            let again: Vec<usize> = chunked(&rows).flat_map(|(_, c)| c).copied().collect();
            assert_eq!(again, rows, "{n}: every row once, in order");
            let fewest = n / CHUNKS[0] + (n % CHUNKS[0]).count_ones() as usize;
            assert_eq!(sizes.len(), fewest, "{n}: {sizes:?}");
        }
    }

    #[test]
    fn timestamps_are_fixed_width_and_round_trip() {
        let a = parse_ts("2026-01-02T03:04:05.000001Z").expect("parse");
        assert_eq!(parse_stored_ts("2026-01-02T03:04:05.000001Z"), Some(a));
        let b = parse_ts("2026-01-02T03:04:05.100000Z").expect("parse");
        assert_eq!(ts(a).len(), ts(b).len());
        assert!(ts(a) < ts(b));
        assert_eq!(parse_ts(&ts(a)).expect("parse"), a);
    }

    #[test]
    fn stored_timestamps_read_as_the_general_parser_reads_them() {
        let mut at = DateTime::parse_from_rfc3339("1970-01-01T00:00:00Z")
            .expect("parse")
            .with_timezone(&Utc);
        // Every field's range over 400 years, leap days included, with odd micros.
        let step = chrono::Duration::microseconds(86_399_999_999 * 3 + 7_000_001);
        while chrono::Datelike::year(&at) < 2370 {
            let text = ts(at);
            assert_eq!(parse_stored_ts(&text), Some(at), "{text}");
            at += step;
        }
        for other in [
            "2026-01-02T03:04:05Z",
            "2026-01-02T03:04:05.000001+00:00",
            "2026-02-30T03:04:05.000001Z",
            "2026-01-02T24:04:05.000001Z",
            "2026-01-02 03:04:05.000001Z",
            "2026-01-02T03:04:0x.000001Z",
            "+026-01-02T03:04:05.000001Z",
        ] {
            assert_eq!(parse_stored_ts(other), None, "{other}");
        }
        // What the fast path leaves is still read by the general parser, or refused.
        assert!(parse_ts("2026-01-02T03:04:05Z").is_ok());
        assert!(parse_ts("2026-02-30T03:04:05.000001Z").is_err());
    }

    #[tokio::test]
    async fn connect_creates_the_parent_directory_and_turns_on_wal_and_foreign_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/deeper/p.db");
        let store = crate::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("connect");
        assert!(path.exists());
        store.health.close().await;

        let pool = SqlitePool::connect_with(
            SqliteConnectOptions::new()
                .filename(&path)
                .foreign_keys(true),
        )
        .await
        .expect("reopen");
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&pool)
            .await
            .expect("pragma");
        assert_eq!(mode.to_lowercase(), "wal");
        pool.close().await;
    }

    #[tokio::test]
    async fn a_write_lock_held_past_the_busy_timeout_is_reported_as_busy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.db");
        let store = crate::connect(&path.display().to_string())
            .await
            .expect("connect");
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(Duration::from_millis(50));
        let holder = SqlitePool::connect_with(opts.clone()).await.expect("pool");
        let mut tx = holder.begin_with(BEGIN_WRITE).await.expect("lock");
        let other = SqlitePool::connect_with(opts).await.expect("pool");
        let err = begin_write(&other).await.expect_err("second writer");
        assert!(matches!(err, StoreError::Busy), "{err:?}");
        sqlx::query(PING)
            .execute(&mut *tx)
            .await
            .expect("holder still works");
        tx.rollback().await.expect("rollback");
        other.close().await;
        holder.close().await;
        store.health.close().await;
    }
}
