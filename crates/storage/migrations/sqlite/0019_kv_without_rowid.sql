-- `kv` becomes a WITHOUT ROWID table keyed by (app, key) (docs/benchmarks.md, "SQLite
-- kv::set events"). As a rowid table with PRIMARY KEY (app, key) every entry was two b-tree
-- entries: the row under its rowid and the (app, key) -> rowid entry of its primary key's
-- index, so writing a new key inserted into both and every read went through the index to
-- the row. Now the row is stored in (app, key) order in one b-tree: one insert per new key,
-- one seek per read, and prefix listings and the app-delete cascade walk that same b-tree.
-- `kv_app_expires` (the expiry purge) keeps its (app, expires_at) entries, which now point at
-- rows by (app, key).
--
-- The rebuild copies every stored entry (one statement, inside the migration's
-- transaction), columns, values and expiries unchanged. The trade-off: a WITHOUT ROWID
-- b-tree keeps a row's first ~1 KB on its page (4 KiB pages) and the rest in overflow
-- pages, and its interior pages hold whole rows, so an app that stores mostly values of many
-- KB gets a deeper tree than before. KV values are small JSON in the common case.
CREATE TABLE kv_new (
    app        TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    expires_at TEXT,
    PRIMARY KEY (app, key)
) WITHOUT ROWID;
INSERT INTO kv_new (app, key, value, updated_at, expires_at)
    SELECT app, key, value, updated_at, expires_at FROM kv ORDER BY app, key;
DROP TABLE kv;
ALTER TABLE kv_new RENAME TO kv;
CREATE INDEX kv_app_expires ON kv (app, expires_at) WHERE expires_at IS NOT NULL;
