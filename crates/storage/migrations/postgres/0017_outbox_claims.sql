-- SQLite's claims no longer move rows in an index (its migration 0017); PostgreSQL's
-- outbox is unchanged. Kept so that both backends number their migrations alike.
SELECT 1;
