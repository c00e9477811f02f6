//! HTTP idempotency keys' statements on PostgreSQL. Two claims of one key meet at the
//! primary key: the second waits for the first to commit, then sees its row. The purge
//! skips rows another transaction holds, so claims never wait on each other's purges.
use sqlx::Postgres;

use crate::repo::idempotency::IdempotencySql;

impl IdempotencySql for Postgres {
    const PURGE_EXPIRED: &'static str = "DELETE FROM http_idempotency WHERE ctid IN
         (SELECT ctid FROM http_idempotency WHERE expires_at <= $1 LIMIT $2
          FOR UPDATE SKIP LOCKED)";
    const TAKE: &'static str = "INSERT INTO http_idempotency
         (app, trigger_id, key, fingerprint, state, holder, created_at, expires_at)
     VALUES ($1, $2, $3, $4, 'running', $5, $6, $7)
     ON CONFLICT (app, trigger_id, key) DO UPDATE SET
         fingerprint = excluded.fingerprint, state = 'running', holder = excluded.holder,
         status = NULL, headers = NULL, body = NULL, created_at = excluded.created_at,
         expires_at = excluded.expires_at
     WHERE http_idempotency.expires_at <= excluded.created_at";
    const FIND: &'static str = "SELECT fingerprint, state, status, headers, body
     FROM http_idempotency WHERE app = $1 AND trigger_id = $2 AND key = $3";
    const ANSWER: &'static str = "UPDATE http_idempotency
     SET state = 'done', status = $1, headers = $2, body = $3, expires_at = $4
     WHERE app = $5 AND trigger_id = $6 AND key = $7 AND holder = $8 AND state = 'running'";
    const RELEASE: &'static str = "DELETE FROM http_idempotency
     WHERE app = $1 AND trigger_id = $2 AND key = $3 AND holder = $4 AND state = 'running'";
    const COUNT: &'static str =
        "SELECT COUNT(*) AS n FROM http_idempotency WHERE app = $1 AND trigger_id = $2";
}
