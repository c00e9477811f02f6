-- The realtime streams (SSE) open on each node at its last heartbeat, for the nodes list.
ALTER TABLE nodes ADD COLUMN realtime_streams BIGINT NOT NULL DEFAULT 0;
