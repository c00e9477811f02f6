-- Limits operators set per app and per script (docs/script-api.md, Limits). A NULL column
-- keeps the app's value (for a script) or the server's [limits]. An app's row goes with the
-- app; a script's row goes with the script, and stays across its deploys and rollbacks.
CREATE TABLE app_limits (
    app                  TEXT PRIMARY KEY NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    max_operations       INTEGER,
    timeout_ms           INTEGER,
    max_call_depth       INTEGER,
    max_string_bytes     INTEGER,
    max_array_len        INTEGER,
    max_map_len          INTEGER,
    max_output_bytes     INTEGER,
    max_log_bytes        INTEGER,
    max_concurrency      INTEGER,
    max_requests_per_sec INTEGER,
    updated_at           TEXT NOT NULL
);

CREATE TABLE script_limits (
    app                  TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    script               TEXT NOT NULL,
    max_operations       INTEGER,
    timeout_ms           INTEGER,
    max_call_depth       INTEGER,
    max_string_bytes     INTEGER,
    max_array_len        INTEGER,
    max_map_len          INTEGER,
    max_output_bytes     INTEGER,
    max_log_bytes        INTEGER,
    max_concurrency      INTEGER,
    max_requests_per_sec INTEGER,
    updated_at           TEXT NOT NULL,
    PRIMARY KEY (app, script),
    FOREIGN KEY (app, script) REFERENCES scripts(app, name) ON DELETE CASCADE
);
