-- A claim no longer moves rows in an index (docs/benchmarks.md, "PostgreSQL backlog"), as on
-- SQLite since its 0017. It stamps the lease (owner, token, expiry) and leaves `available_at`
-- alone: a leased row keeps its place in `outbox_due`, and a row is due when `available_at`
-- has passed and it has no live lease (`lease_expires_at` passed). Claims walk `outbox_due`
-- in due order and step over the rows in flight, so an expired lease is taken over at its own
-- due time, ahead of every row that became due after it, without an index of its own. Rows
-- leased before this migration have `available_at` = their lease's end, which the new rule
-- reads the same way.
--
-- No column a claim writes is in an index (or an index's predicate) once `outbox_leased` is
-- gone, so its new row version can stay on its page (a heap-only tuple, no index entry)
-- when the page has room for it. A claim takes the rows of a page together (they went in
-- in due order), and a leased version is larger than the row was (owner, token, expiry), so
-- inserts fill pages to 40 % only: the rest holds the claim's new versions. The space of the
-- old ones is reclaimed when the page is next read, without a vacuum.
DROP INDEX outbox_leased;
ALTER TABLE outbox SET (fillfactor = 40);
