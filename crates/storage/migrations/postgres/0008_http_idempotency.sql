-- HTTP idempotency keys (docs/admin-api.md, Idempotency keys). An http trigger opts in with
-- a TTL (NULL = off). A key is per app and trigger (route); while its first request runs it
-- is 'running' (expiring after the request timeout, so a crash cannot hold it forever),
-- then 'done' with the answer to replay until `expires_at`. `fingerprint` (method, path,
-- query and a hash of the body) only tells a key reused with a different request.
ALTER TABLE triggers ADD COLUMN idempotency_ttl_secs INTEGER;

CREATE TABLE http_idempotency (
    app         TEXT NOT NULL,
    trigger_id  UUID NOT NULL REFERENCES triggers(id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('running', 'done')),
    holder      UUID NOT NULL,
    status      INTEGER,
    headers     TEXT,
    body        BYTEA,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (app, trigger_id, key)
);
CREATE INDEX http_idempotency_expires ON http_idempotency (expires_at);
