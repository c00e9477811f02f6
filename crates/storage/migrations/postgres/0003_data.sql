-- App data: KV entries, blob names, config, secrets and the development mailbox. Every
-- table references apps(name) ON DELETE CASCADE and every key is scoped by app. Keys and
-- names use the "C" collation (byte order), so prefix ranges and keyset paging agree with
-- Rust's string order and with SQLite, whatever the database's default collation.

-- An entry whose `expires_at` is at or before now is invisible.
CREATE TABLE kv (
    app        TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    key        TEXT COLLATE "C" NOT NULL,
    value      JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ,
    PRIMARY KEY (app, key)
);
CREATE INDEX kv_app_expires ON kv (app, expires_at) WHERE expires_at IS NOT NULL;

-- `object` is the object store's key (`<app>/<uuid>`), never derived from `name`.
CREATE TABLE blobs (
    app          TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    name         TEXT COLLATE "C" NOT NULL,
    object       TEXT NOT NULL,
    size         BIGINT NOT NULL,
    content_type TEXT,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (app, name)
);

CREATE TABLE app_config (
    app   TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    key   TEXT COLLATE "C" NOT NULL,
    value JSONB NOT NULL,
    PRIMARY KEY (app, key)
);

-- XChaCha20-Poly1305 with the server's key; the AAD binds a ciphertext to (app, name).
CREATE TABLE app_secrets (
    app        TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    name       TEXT COLLATE "C" NOT NULL,
    nonce      BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (app, name)
);

CREATE TABLE mailbox (
    id         UUID PRIMARY KEY,
    app        TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    message    JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX mailbox_app_id ON mailbox (app, id DESC);
