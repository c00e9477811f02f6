//! Realtime's statements on PostgreSQL. The CORS origins are JSONB, bound and read as text.
use sqlx::Postgres;

use crate::repo::realtime::RealtimeSql;

impl RealtimeSql for Postgres {
    const APP_EXISTS: &'static str = "SELECT 1 AS one FROM apps WHERE name = $1";
    const EXPOSE: &'static str = "INSERT INTO realtime_topics (app, topic, created_at)
     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
    const UNEXPOSE: &'static str = "DELETE FROM realtime_topics WHERE app = $1 AND topic = $2";
    const TOPICS: &'static str = "SELECT topic FROM realtime_topics WHERE app = $1 ORDER BY topic";
    const SET_CORS: &'static str =
        "INSERT INTO realtime_apps (app, cors_origins) VALUES ($1, $2::jsonb)
     ON CONFLICT (app) DO UPDATE SET cors_origins = EXCLUDED.cors_origins";
    const CORS: &'static str =
        "SELECT cors_origins::text AS cors_origins FROM realtime_apps WHERE app = $1";
    const SECRET_ADD: &'static str =
        "INSERT INTO app_secrets (app, name, nonce, ciphertext, updated_at)
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
    const EVENTS_AFTER: &'static str = "SELECT id, topic, payload, created_at FROM realtime_events
     WHERE app = $1 AND id > $2 ORDER BY id LIMIT $3";
    const BOUNDS: &'static str = "SELECT
         (SELECT MIN(id) FROM realtime_events WHERE app = $1) AS oldest,
         COALESCE((SELECT last_id FROM realtime_apps WHERE app = $1), 0) AS last";
    const PRUNE_COUNT: &'static str = "DELETE FROM realtime_events e USING realtime_apps a
     WHERE a.app = e.app AND e.id <= a.last_id - $1";
    const PRUNE_AGE: &'static str = "DELETE FROM realtime_events WHERE created_at < $1";
    const OLDEST: &'static str = "SELECT MIN(created_at) AS oldest FROM realtime_events";
}
