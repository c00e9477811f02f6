-- SQLite's 0019 rebuilds `kv` as a WITHOUT ROWID table (one b-tree keyed by (app, key));
-- PostgreSQL's heap and primary key index stay as they are. Kept so that both backends
-- number their migrations alike.
SELECT 1;
