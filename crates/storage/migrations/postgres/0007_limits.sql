-- Limits operators set per app and per script (docs/script-api.md, Limits). A NULL column
-- keeps the app's value (for a script) or the server's [limits]. An app's row goes with the
-- app; a script's row goes with the script, and stays across its deploys and rollbacks.
CREATE TABLE app_limits (
    app                  TEXT PRIMARY KEY REFERENCES apps(name) ON DELETE CASCADE,
    max_operations       BIGINT,
    timeout_ms           BIGINT,
    max_call_depth       BIGINT,
    max_string_bytes     BIGINT,
    max_array_len        BIGINT,
    max_map_len          BIGINT,
    max_output_bytes     BIGINT,
    max_log_bytes        BIGINT,
    max_concurrency      BIGINT,
    max_requests_per_sec BIGINT,
    updated_at           TIMESTAMPTZ NOT NULL
);

CREATE TABLE script_limits (
    app                  TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    script               TEXT NOT NULL,
    max_operations       BIGINT,
    timeout_ms           BIGINT,
    max_call_depth       BIGINT,
    max_string_bytes     BIGINT,
    max_array_len        BIGINT,
    max_map_len          BIGINT,
    max_output_bytes     BIGINT,
    max_log_bytes        BIGINT,
    max_concurrency      BIGINT,
    max_requests_per_sec BIGINT,
    updated_at           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (app, script),
    FOREIGN KEY (app, script) REFERENCES scripts(app, name) ON DELETE CASCADE
);
