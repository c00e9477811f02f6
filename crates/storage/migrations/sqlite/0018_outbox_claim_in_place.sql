-- PostgreSQL's claims no longer move rows in an index (its migration 0018), as SQLite's do
-- since 0017. Kept so that both backends number their migrations alike.
SELECT 1;
