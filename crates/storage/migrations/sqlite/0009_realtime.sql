-- Realtime (docs/realtime.md). `realtime_apps` holds an app's last event id (ids increase
-- per app in commit order: the row is updated inside the committing transaction) and the
-- origins its streams answer CORS for (a JSON array). `realtime_topics` are the topics
-- exposed to browsers; `realtime_events` is the durable replay buffer, pruned by count and
-- age. The signing key is an app secret (app_secrets), sealed like the others.
CREATE TABLE realtime_apps (
    app          TEXT PRIMARY KEY NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    last_id      INTEGER NOT NULL DEFAULT 0,
    cors_origins TEXT NOT NULL DEFAULT '[]'
);

CREATE TABLE realtime_topics (
    app        TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    topic      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (app, topic)
);

CREATE TABLE realtime_events (
    app        TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    id         INTEGER NOT NULL,
    topic      TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (app, id)
);
CREATE INDEX realtime_events_created ON realtime_events (created_at);
