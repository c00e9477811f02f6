//! Dead letters' statements on PostgreSQL.
use sqlx::Postgres;

use crate::repo::dead_letters::DeadLettersSql;

impl DeadLettersSql for Postgres {
    const LIST: &'static str =
        "SELECT id, app, kind, script, source, payload::text AS payload, attempts,
            error, event_id, created_at
     FROM dead_letters WHERE app = $1 AND ($2::uuid IS NULL OR id < $2)
     ORDER BY id DESC LIMIT $3";
    const LIST_MATCHING: &'static str =
        "SELECT id, app, kind, script, source, payload::text AS payload, attempts,
            error, event_id, created_at
     FROM dead_letters
     WHERE app = $1 AND ($2::uuid IS NULL OR id < $2) AND ($3::text IS NULL OR script = $3)
       AND ($4::text IS NULL OR kind = $4) AND ($5::text IS NULL OR strpos(error, $5) > 0)
       AND ($6::timestamptz IS NULL OR created_at >= $6)
       AND ($7::timestamptz IS NULL OR created_at < $7)
     ORDER BY id DESC LIMIT $8";
    const COUNT_MATCHING: &'static str = "SELECT COUNT(*) AS n FROM dead_letters
     WHERE app = $1 AND ($2::uuid IS NULL OR id < $2) AND ($3::text IS NULL OR script = $3)
       AND ($4::text IS NULL OR kind = $4) AND ($5::text IS NULL OR strpos(error, $5) > 0)
       AND ($6::timestamptz IS NULL OR created_at >= $6)
       AND ($7::timestamptz IS NULL OR created_at < $7)";
    const GET: &'static str =
        "SELECT id, app, kind, script, source, payload::text AS payload, attempts,
            error, event_id, created_at
     FROM dead_letters WHERE app = $1 AND id = $2";
    const TAKE: &'static str = "DELETE FROM dead_letters WHERE app = $1 AND id = $2
     RETURNING kind, script, trigger_id, source, payload::text AS payload";
    const TRIGGER_MAX_ATTEMPTS: &'static str =
        "SELECT max_attempts FROM triggers WHERE app = $1 AND id = $2";
    const DELETE: &'static str = "DELETE FROM dead_letters WHERE app = $1 AND id = $2";
    const PURGE_APP: &'static str = "DELETE FROM dead_letters WHERE app = $1";
    const PURGE_BEFORE: &'static str = "DELETE FROM dead_letters WHERE created_at < $1";
    const PURGE_KEYS: &'static str = "DELETE FROM idempotency_keys WHERE created_at < $1";
    const OLDEST: &'static str = "SELECT MIN(created_at) AS oldest FROM dead_letters";
    const SAMPLE_QUEUE: &'static str =
        "INSERT INTO queue_history (app, minute, queue_depth, dead_letters)
     SELECT $1, $2, (SELECT COUNT(*) FROM outbox WHERE app = $1),
            (SELECT COUNT(*) FROM dead_letters WHERE app = $1)
     WHERE EXISTS (SELECT 1 FROM apps WHERE name = $1)
     ON CONFLICT (app, minute) DO UPDATE
     SET queue_depth = excluded.queue_depth, dead_letters = excluded.dead_letters";
    const PRUNE_QUEUE_HISTORY: &'static str =
        "DELETE FROM queue_history WHERE app = $1 AND minute < $2";
    const QUEUE_HISTORY: &'static str = "SELECT minute, queue_depth, dead_letters
     FROM queue_history
     WHERE app = $1 AND minute >= COALESCE(
        (SELECT MAX(minute) FROM queue_history WHERE app = $1 AND minute <= $2), $2)
     ORDER BY minute";
    const QUEUE_NOW: &'static str =
        "SELECT (SELECT COUNT(*) FROM outbox WHERE app = $1) AS queue_depth,
            (SELECT COUNT(*) FROM dead_letters WHERE app = $1) AS dead_letters";
}
