-- Scoped tokens: a role (admin, deploy, read) and the apps a token covers (a comma-separated
-- list of app names; NULL is every app). Existing tokens, the bootstrap one among them, stay
-- admins over every app.
ALTER TABLE api_tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'admin'
    CHECK (role IN ('admin', 'deploy', 'read'));
ALTER TABLE api_tokens ADD COLUMN apps TEXT;
