-- Dashboard sessions: the browser keeps a random secret in an HttpOnly cookie; only its
-- SHA-256 is stored. A session acts as the token that opened it and dies with that token.
CREATE TABLE dashboard_sessions (
    secret_hash TEXT PRIMARY KEY NOT NULL,
    token_id    UUID NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX dashboard_sessions_token ON dashboard_sessions (token_id);
CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);
