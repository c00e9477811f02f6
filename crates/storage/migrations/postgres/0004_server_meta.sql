-- Facts about this database that a server checks when it starts, one row each:
-- `secrets_key_fingerprint`: which key sealed the app secrets (a missing or different key
--   file is then an error at start, not a silent loss of every secret);
-- `bootstrap_token_hash`: the hash of the admin token last installed from
--   PICLOUD_ADMIN_TOKEN (a changed value revokes the token of the previous one).
CREATE TABLE server_meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
