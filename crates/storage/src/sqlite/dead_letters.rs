//! Dead letters' statements on SQLite.
use sqlx::Sqlite;

use crate::repo::dead_letters::DeadLettersSql;

impl DeadLettersSql for Sqlite {
    const LIST: &'static str =
        "SELECT id, app, kind, script, source, payload, attempts, error, event_id,
            created_at
     FROM dead_letters WHERE app = ?1 AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3";
    const LIST_MATCHING: &'static str =
        "SELECT id, app, kind, script, source, payload, attempts, error, event_id,
            created_at
     FROM dead_letters
     WHERE app = ?1 AND (?2 IS NULL OR id < ?2) AND (?3 IS NULL OR script = ?3)
       AND (?4 IS NULL OR kind = ?4) AND (?5 IS NULL OR instr(error, ?5) > 0)
       AND (?6 IS NULL OR created_at >= ?6) AND (?7 IS NULL OR created_at < ?7)
     ORDER BY id DESC LIMIT ?8";
    const COUNT_MATCHING: &'static str = "SELECT COUNT(*) AS n FROM dead_letters
     WHERE app = ?1 AND (?2 IS NULL OR id < ?2) AND (?3 IS NULL OR script = ?3)
       AND (?4 IS NULL OR kind = ?4) AND (?5 IS NULL OR instr(error, ?5) > 0)
       AND (?6 IS NULL OR created_at >= ?6) AND (?7 IS NULL OR created_at < ?7)";
    const GET: &'static str =
        "SELECT id, app, kind, script, source, payload, attempts, error, event_id,
            created_at
     FROM dead_letters WHERE app = ? AND id = ?";
    const TAKE: &'static str = "DELETE FROM dead_letters WHERE app = ? AND id = ?
     RETURNING kind, script, trigger_id, source, payload";
    const TRIGGER_MAX_ATTEMPTS: &'static str =
        "SELECT max_attempts FROM triggers WHERE app = ? AND id = ?";
    const DELETE: &'static str = "DELETE FROM dead_letters WHERE app = ? AND id = ?";
    const PURGE_APP: &'static str = "DELETE FROM dead_letters WHERE app = ?";
    const PURGE_BEFORE: &'static str = "DELETE FROM dead_letters WHERE created_at < ?";
    const PURGE_KEYS: &'static str = "DELETE FROM idempotency_keys WHERE created_at < ?";
    const OLDEST: &'static str = "SELECT MIN(created_at) AS oldest FROM dead_letters";
    const SAMPLE_QUEUE: &'static str =
        "INSERT INTO queue_history (app, minute, queue_depth, dead_letters)
     SELECT ?1, ?2, (SELECT COUNT(*) FROM outbox WHERE app = ?1),
            (SELECT COUNT(*) FROM dead_letters WHERE app = ?1)
     WHERE EXISTS (SELECT 1 FROM apps WHERE name = ?1)
     ON CONFLICT (app, minute) DO UPDATE
     SET queue_depth = excluded.queue_depth, dead_letters = excluded.dead_letters";
    const PRUNE_QUEUE_HISTORY: &'static str =
        "DELETE FROM queue_history WHERE app = ? AND minute < ?";
    const QUEUE_HISTORY: &'static str = "SELECT minute, queue_depth, dead_letters
     FROM queue_history
     WHERE app = ?1 AND minute >= COALESCE(
        (SELECT MAX(minute) FROM queue_history WHERE app = ?1 AND minute <= ?2), ?2)
     ORDER BY minute";
    const QUEUE_NOW: &'static str =
        "SELECT (SELECT COUNT(*) FROM outbox WHERE app = ?1) AS queue_depth,
            (SELECT COUNT(*) FROM dead_letters WHERE app = ?1) AS dead_letters";
}
