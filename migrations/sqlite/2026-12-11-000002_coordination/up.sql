-- Coordination core (issue 10); see the PostgreSQL migration of the same name.
CREATE TABLE sync_requests (
    calendar_id TEXT PRIMARY KEY REFERENCES calendar_sync_state (id) ON DELETE CASCADE,
    first_requested_at TIMESTAMP,
    last_requested_at TIMESTAMP,
    request_count BIGINT NOT NULL DEFAULT 0,
    channel_id TEXT,
    last_message_number BIGINT
);

CREATE INDEX sync_requests_pending ON sync_requests (first_requested_at)
    WHERE first_requested_at IS NOT NULL;

INSERT INTO sync_requests
    (calendar_id, first_requested_at, last_requested_at, request_count, channel_id, last_message_number)
SELECT id, sync_requested_at, sync_last_requested_at, sync_request_count,
       webhook_channel_id, webhook_last_message_number
FROM calendar_sync_state;

ALTER TABLE calendar_sync_state ADD COLUMN claim_epoch BIGINT NOT NULL DEFAULT 0;

CREATE TABLE chronos_instances (
    instance_id TEXT PRIMARY KEY,
    lock_key BIGINT NOT NULL,
    started_at TIMESTAMP NOT NULL
);

CREATE TRIGGER calendar_sync_state_sync_state_insert BEFORE INSERT ON calendar_sync_state
WHEN NEW.sync_state NOT IN ('pending', 'syncing', 'idle', 'failing', 'needs_reauth', 'gone')
BEGIN SELECT RAISE(ABORT, 'calendar_sync_state.sync_state: invalid value'); END;

CREATE TRIGGER calendar_sync_state_sync_state_update BEFORE UPDATE OF sync_state ON calendar_sync_state
WHEN NEW.sync_state NOT IN ('pending', 'syncing', 'idle', 'failing', 'needs_reauth', 'gone')
BEGIN SELECT RAISE(ABORT, 'calendar_sync_state.sync_state: invalid value'); END;
