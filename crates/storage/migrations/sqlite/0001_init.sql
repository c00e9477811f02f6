-- Apps are keyed by name; everything else references apps(name) ON DELETE CASCADE so that
-- deleting an app is one statement. Timestamps are RFC 3339 text with a fixed microsecond
-- precision and a `Z` suffix, so text comparison is time comparison.
CREATE TABLE apps (
    name       TEXT PRIMARY KEY NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE scripts (
    app            TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    active_version INTEGER NOT NULL,
    latest_version INTEGER NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (app, name)
);

CREATE TABLE script_versions (
    app        TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    script     TEXT NOT NULL,
    version    INTEGER NOT NULL,
    source     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (app, script, version),
    FOREIGN KEY (app, script) REFERENCES scripts(app, name) ON DELETE CASCADE
);

CREATE TABLE triggers (
    id           TEXT PRIMARY KEY NOT NULL,
    app          TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    script       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    config       TEXT NOT NULL,
    unique_key   TEXT,
    max_attempts INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    UNIQUE (app, unique_key),
    FOREIGN KEY (app, script) REFERENCES scripts(app, name) ON DELETE CASCADE
);
CREATE INDEX triggers_app_script ON triggers (app, script);

-- Ids are UUIDv7 as canonical lowercase text, so `ORDER BY id DESC` is newest first.
CREATE TABLE invocations (
    id          TEXT PRIMARY KEY NOT NULL,
    app         TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    script      TEXT NOT NULL,
    version     INTEGER,
    "trigger"   TEXT NOT NULL,
    status      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    http_status INTEGER,
    summary     TEXT NOT NULL,
    logs        TEXT NOT NULL,
    error       TEXT,
    request_id  TEXT
);
CREATE INDEX invocations_app_id ON invocations (app, id DESC);
CREATE INDEX invocations_app_script_id ON invocations (app, script, id DESC);

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);
