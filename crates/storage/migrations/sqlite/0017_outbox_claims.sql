-- A claim no longer moves rows in an index (docs/benchmarks.md, "SQLite event SQL"). It
-- stamps the lease (owner, token, expiry) and leaves `available_at` alone: a leased row keeps
-- its place in `outbox_due`, and a row is due when `available_at` has passed and it has no
-- live lease (`lease_expires_at` passed). Claims walk `outbox_due` in due order and step
-- over the rows in flight (at most the events the nodes hold), so an expired lease is taken
-- over at its own due time, ahead of every row that became due after it, without an index
-- of its own. Rows leased before this migration have `available_at` = their lease's end,
-- which the new rule reads the same way.
DROP INDEX outbox_leased;
