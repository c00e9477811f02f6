-- Leases per claim (docs/cluster.md): every claim stamps each row it takes with a fresh
-- random token, and finishing, retrying, releasing or dead-lettering the row must present
-- it. A run whose row was claimed again after its lease ran out (its node hung, lost the
-- database, or was restarted under the same `PICLOUD_NODE_ID`) holds a stale token, so
-- none of its effects are committed. Rows leased before this migration have no token:
-- their runs cannot commit, and the rows are claimed again when their leases run out.
ALTER TABLE outbox ADD COLUMN lease_token UUID;

-- The rows under a claim, live or expired: few (the events in flight), so claims look for
-- expired leases first at little cost, and a dead node's events are taken over as soon as
-- their leases end instead of behind a backlog that became due after them.
CREATE INDEX outbox_leased ON outbox (available_at) WHERE lease_owner IS NOT NULL;
