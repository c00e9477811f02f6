-- App data: KV entries, blob names, config, secrets and the development mailbox. Every
-- table references apps(name) ON DELETE CASCADE and every key is scoped by app. Keys and
-- names are opaque text compared byte-wise (SQLite's BINARY collation), so prefix ranges
-- and keyset paging agree with Rust's string order. Timestamps as in 0001.

-- `value` is JSON text; an entry whose `expires_at` is at or before now is invisible.
CREATE TABLE kv (
    app        TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    expires_at TEXT,
    PRIMARY KEY (app, key)
);
CREATE INDEX kv_app_expires ON kv (app, expires_at) WHERE expires_at IS NOT NULL;

-- `object` is the object store's key (`<app>/<uuid>`), never derived from `name`.
CREATE TABLE blobs (
    app          TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    object       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    content_type TEXT,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (app, name)
);

CREATE TABLE app_config (
    app   TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (app, key)
);

-- XChaCha20-Poly1305 with the server's key; the AAD binds a ciphertext to (app, name).
CREATE TABLE app_secrets (
    app        TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (app, name)
);

-- Ids are UUIDv7 text, so `ORDER BY id DESC` is newest first.
CREATE TABLE mailbox (
    id         TEXT PRIMARY KEY NOT NULL,
    app        TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    message    TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX mailbox_app_id ON mailbox (app, id DESC);
