-- The history behind the dashboard's queue-depth and dead-letter charts
-- (`GET /api/v1/apps/{app}/queue/history`): per app, at most one sample a minute of its
-- outbox rows and dead letters, counted by the database so it is the app's and not one
-- node's. Samples are taken after activity (never on a timer); a minute without one kept
-- the value before it. Writing an app's sample deletes its samples older than a day.
CREATE TABLE queue_history (
    app          TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    minute       TIMESTAMPTZ NOT NULL,
    queue_depth  BIGINT NOT NULL,
    dead_letters BIGINT NOT NULL,
    PRIMARY KEY (app, minute)
);
