-- Chronos calendar sync: initial schema (SQLite).
-- Timestamps are UTC, stored without time zone (the same SQL type as on SQLite,
-- so one Diesel schema serves both backends).

CREATE TABLE google_credentials (
    user_id TEXT PRIMARY KEY,
    -- nonce || ChaCha20-Poly1305 ciphertext, keyed by `encryption_key`
    refresh_token_ciphertext BLOB NOT NULL,
    access_token_ciphertext BLOB,
    access_token_expires_at TIMESTAMP,
    needs_reauth BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE calendar_sync_state (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    google_calendar_id TEXT NOT NULL,
    -- the current watch channel (the seed's columns, read by other services)
    webhook_channel_id TEXT UNIQUE,
    webhook_resource_id TEXT,
    webhook_expires_at TIMESTAMP,
    webhook_channel_token TEXT,
    webhook_last_message_number BIGINT,
    -- 'push' (channels registered) or 'polling' (push unavailable for this calendar)
    push_mode TEXT NOT NULL DEFAULT 'push',
    channel_next_attempt_at TIMESTAMP,
    channel_failure_count INTEGER NOT NULL DEFAULT 0,
    channel_last_error TEXT,
    channel_lease_owner TEXT,
    channel_lease_expires_at TIMESTAMP,
    -- sync bookkeeping
    sync_state TEXT NOT NULL DEFAULT 'pending',
    sync_token TEXT,
    full_sync_complete BOOLEAN NOT NULL DEFAULT FALSE,
    sync_generation BIGINT NOT NULL DEFAULT 0,
    -- the durable, coalesced sync request: first and last unserved request
    sync_requested_at TIMESTAMP,
    sync_last_requested_at TIMESTAMP,
    sync_request_count BIGINT NOT NULL DEFAULT 0,
    -- the claim of the worker syncing it (a lease that expires if the worker dies)
    lease_owner TEXT,
    lease_expires_at TIMESTAMP,
    next_attempt_at TIMESTAMP,
    failure_count INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_sync_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (user_id, google_calendar_id)
);

CREATE INDEX calendar_sync_state_pending ON calendar_sync_state (sync_requested_at)
    WHERE sync_requested_at IS NOT NULL;
CREATE INDEX calendar_sync_state_leased ON calendar_sync_state (lease_expires_at)
    WHERE lease_owner IS NOT NULL;
CREATE INDEX calendar_sync_state_channel_expiry ON calendar_sync_state (webhook_expires_at);

-- Every channel the service ever created, until it is stopped at Google.
CREATE TABLE watch_channels (
    channel_id TEXT PRIMARY KEY,
    calendar_id TEXT REFERENCES calendar_sync_state (id) ON DELETE SET NULL,
    user_id TEXT NOT NULL,
    google_calendar_id TEXT NOT NULL,
    token TEXT NOT NULL,
    resource_id TEXT,
    expires_at TIMESTAMP,
    -- 'registering' (persisted before events.watch), 'active', 'retiring' (to be stopped), 'stopped'
    state TEXT NOT NULL,
    stop_after TIMESTAMP,
    stop_attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE INDEX watch_channels_to_stop ON watch_channels (stop_after) WHERE state = 'retiring';
CREATE INDEX watch_channels_calendar ON watch_channels (calendar_id);

CREATE TABLE calendar_events (
    calendar_id TEXT NOT NULL REFERENCES calendar_sync_state (id) ON DELETE CASCADE,
    event_id TEXT NOT NULL,
    status TEXT NOT NULL,
    summary TEXT,
    updated TIMESTAMP,
    etag TEXT,
    -- the event resource exactly as Google returned it
    raw_json TEXT NOT NULL,
    sync_generation BIGINT NOT NULL,
    mirrored_at TIMESTAMP NOT NULL,
    PRIMARY KEY (calendar_id, event_id)
);
