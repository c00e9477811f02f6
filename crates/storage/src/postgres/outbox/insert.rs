//! Planned rows and dead letters, each kind in one UNNEST statement however many there
//! are; a statement that inserts rows also tells the other nodes.
use chrono::{DateTime, Utc};
use shared::StoreError;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

use super::NOTIFY;
use crate::error::db;
use crate::outbox::{Letter, NewRow, json};

const INSERT_ROWS: &str = "INSERT INTO outbox (id, app, kind, script, trigger_id, source, payload,
         attempt, max_attempts, parked, available_at, scheduled_at, created_at, trace_context)
     SELECT t.id, t.app, t.kind, t.script, t.trigger_id, t.source, t.payload::jsonb, 1,
            t.max_attempts, t.parked, t.available_at, t.scheduled_at, $12, t.trace_context
     FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[],
                 $7::text[], $8::int4[], $9::bool[], $10::timestamptz[], $11::timestamptz[],
                 $13::text[])
          AS t(id, app, kind, script, trigger_id, source, payload, max_attempts, parked,
               available_at, scheduled_at, trace_context)";
const INSERT_DEAD_LETTERS: &str = "INSERT INTO dead_letters (id, app, kind, script, trigger_id,
         source, payload, attempts, error, event_id, created_at)
     SELECT t.id, t.app, t.kind, t.script, t.trigger_id, t.source, t.payload::jsonb,
            t.attempts, t.error, t.event_id, $11
     FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[],
                 $7::text[], $8::int4[], $9::text[], $10::uuid[])
          AS t(id, app, kind, script, trigger_id, source, payload, attempts, error, event_id)";

/// Insert planned rows and dead letters; returns how many rows went in.
pub(super) async fn insert(
    conn: &mut PgConnection,
    rows: &[NewRow],
    letters: &[Letter],
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    insert_letters(conn, letters, now).await?;
    insert_rows(conn, rows, now).await
}

fn saturating_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

async fn insert_rows(
    conn: &mut PgConnection,
    rows: &[NewRow],
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let column = |f: fn(&NewRow) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
    sqlx::query(INSERT_ROWS)
        .bind(rows.iter().map(|r| r.id.0).collect::<Vec<Uuid>>())
        .bind(rows.iter().map(|r| r.app.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>())
        .bind(column(|r| r.script.clone()))
        .bind(
            rows.iter()
                .map(|r| r.trigger.map(|t| t.0))
                .collect::<Vec<_>>(),
        )
        .bind(column(|r| r.source.clone()))
        .bind(rows.iter().map(|r| r.payload.as_str()).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| saturating_i32(r.max_attempts))
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.parked).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.available_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.scheduled_at).collect::<Vec<_>>())
        .bind(now)
        .bind(column(|r| r.trace.clone()))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    sqlx::query(NOTIFY).execute(&mut *conn).await.map_err(db)?;
    Ok(rows.len() as u64)
}

async fn insert_letters(
    conn: &mut PgConnection,
    letters: &[Letter],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if letters.is_empty() {
        return Ok(());
    }
    let payloads = letters
        .iter()
        .map(|l| json(&l.letter.payload))
        .collect::<Result<Vec<_>, _>>()?;
    sqlx::query(INSERT_DEAD_LETTERS)
        .bind(letters.iter().map(|l| l.letter.id.0).collect::<Vec<Uuid>>())
        .bind(
            letters
                .iter()
                .map(|l| l.letter.app.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            letters
                .iter()
                .map(|l| l.letter.kind.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            letters
                .iter()
                .map(|l| l.letter.script.as_ref().map(|s| s.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(
            letters
                .iter()
                .map(|l| l.trigger.map(|t| t.0))
                .collect::<Vec<_>>(),
        )
        .bind(
            letters
                .iter()
                .map(|l| l.letter.source.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(payloads)
        .bind(
            letters
                .iter()
                .map(|l| saturating_i32(l.letter.attempts))
                .collect::<Vec<_>>(),
        )
        .bind(
            letters
                .iter()
                .map(|l| l.letter.error.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            letters
                .iter()
                .map(|l| l.letter.event_id.0)
                .collect::<Vec<Uuid>>(),
        )
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}
