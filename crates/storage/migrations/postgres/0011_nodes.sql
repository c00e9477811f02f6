-- The cluster as its nodes see it (docs/cluster.md): one row per running server process,
-- written when it starts, refreshed by its heartbeat and deleted on a clean shutdown. A row
-- whose heartbeat is older than a few of its own intervals is a node that died: it is shown
-- `down`, and the outbox rows it leased are taken over by the others when their leases run
-- out. `key_fingerprint` is the fingerprint of the node's secrets key (never the key), so a
-- node started with a different key is refused while the others run.
CREATE TABLE nodes (
    id              TEXT PRIMARY KEY NOT NULL,
    role            TEXT NOT NULL,
    address         TEXT NOT NULL,
    version         TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,
    started_at      TIMESTAMPTZ NOT NULL,
    heartbeat_at    TIMESTAMPTZ NOT NULL,
    heartbeat_ms    BIGINT NOT NULL,
    in_flight       BIGINT NOT NULL DEFAULT 0,
    queue_depth     BIGINT NOT NULL DEFAULT 0
);
