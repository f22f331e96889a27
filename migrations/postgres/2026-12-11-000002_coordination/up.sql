-- Coordination core (issue 10).
--
-- The pending sync request lives in its own narrow table, apart from the wide
-- state row that syncs and renewals update: the webhook writes only here, so it
-- never waits for a sync's page transaction (which locks the state row), and a
-- notification for a calendar that already has an unclaimed request writes
-- nothing at all. `first_requested_at` NULL means no unserved request; the
-- row itself stays, keeping the last message number recorded on the channel.
CREATE TABLE sync_requests (
    calendar_id TEXT PRIMARY KEY REFERENCES calendar_sync_state (id) ON DELETE CASCADE,
    first_requested_at TIMESTAMP,
    last_requested_at TIMESTAMP,
    request_count BIGINT NOT NULL DEFAULT 0,
    channel_id TEXT,
    last_message_number BIGINT
) WITH (fillfactor = 70);

CREATE INDEX sync_requests_pending ON sync_requests (first_requested_at)
    WHERE first_requested_at IS NOT NULL;

INSERT INTO sync_requests
    (calendar_id, first_requested_at, last_requested_at, request_count, channel_id, last_message_number)
SELECT id, sync_requested_at, sync_last_requested_at, sync_request_count,
       webhook_channel_id, webhook_last_message_number
FROM calendar_sync_state;

-- Fencing: every claim takes the next epoch; every write under it checks it.
ALTER TABLE calendar_sync_state ADD COLUMN claim_epoch BIGINT NOT NULL DEFAULT 0;

-- Live instances: each holds a session-level advisory lock on `lock_key` for as
-- long as its process runs, so a dead owner's claims are taken over at once.
CREATE TABLE chronos_instances (
    instance_id TEXT PRIMARY KEY,
    lock_key BIGINT NOT NULL,
    started_at TIMESTAMP NOT NULL
);

ALTER TABLE calendar_sync_state ADD CONSTRAINT calendar_sync_state_sync_state_valid
    CHECK (sync_state IN ('pending', 'syncing', 'idle', 'failing', 'needs_reauth', 'gone'));
