-- How many invocation records of an app were not stored because of the per-app bound on
-- failure records ([invocations] failures_per_sec); the invocation list shows it as
-- `dropped`. Gone with the app.
CREATE TABLE invocation_drops (
    app     TEXT PRIMARY KEY REFERENCES apps(name) ON DELETE CASCADE,
    dropped BIGINT NOT NULL
);
