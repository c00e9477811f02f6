-- The universal outbox, dead letters and queue idempotency keys; cron's last slot and
-- the attempt of an event invocation.
--
-- An outbox row is claimable when it is not parked and `available_at` has passed. A claim
-- moves `available_at` to the end of its lease, so a row under a live lease is not due and
-- an expired lease makes it due again: one index serves claiming and `next_due_at`.
-- A parked row is a queue message without a consumer yet (script NULL); creating the
-- queue's trigger releases it.
ALTER TABLE triggers ADD COLUMN last_fired_at TEXT;
ALTER TABLE invocations ADD COLUMN attempt INTEGER;

CREATE TABLE outbox (
    id               TEXT PRIMARY KEY NOT NULL,
    app              TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    kind             TEXT NOT NULL,
    script           TEXT,
    trigger_id       TEXT,
    source           TEXT,
    payload          TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    parked           INTEGER NOT NULL DEFAULT 0,
    available_at     TEXT NOT NULL,
    scheduled_at     TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    last_error       TEXT
);
CREATE INDEX outbox_due ON outbox (available_at) WHERE parked = 0;
CREATE INDEX outbox_app ON outbox (app);
CREATE INDEX outbox_parked ON outbox (app, source) WHERE parked = 1;

-- Ids are UUIDv7 as canonical lowercase text, so `ORDER BY id DESC` is newest first.
CREATE TABLE dead_letters (
    id         TEXT PRIMARY KEY NOT NULL,
    app        TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    script     TEXT,
    trigger_id TEXT,
    source     TEXT,
    payload    TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    error      TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX dead_letters_app_id ON dead_letters (app, id DESC);
CREATE INDEX dead_letters_created_at ON dead_letters (created_at);

CREATE TABLE idempotency_keys (
    app        TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    queue      TEXT NOT NULL,
    key        TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (app, queue, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
