-- The channel states and push modes are the domain's enums
-- (sync_domain::channel::ChannelState, PushMode): the database refuses others.
ALTER TABLE watch_channels ADD CONSTRAINT watch_channels_state_known
    CHECK (state IN ('registering', 'active', 'retiring', 'stopped'));
ALTER TABLE calendar_sync_state ADD CONSTRAINT calendar_sync_state_push_mode_known
    CHECK (push_mode IN ('push', 'polling'));

-- What the channel worker's sweeps filter on, every tick: abandoned
-- registrations, the retention of stopped rows, and the resource id known for
-- a user's calendar.
CREATE INDEX watch_channels_registering ON watch_channels (created_at)
    WHERE state = 'registering';
CREATE INDEX watch_channels_stopped ON watch_channels (updated_at)
    WHERE state = 'stopped';
CREATE INDEX watch_channels_active_calendar ON watch_channels (calendar_id)
    WHERE state = 'active';
CREATE INDEX watch_channels_google_calendar
    ON watch_channels (user_id, google_calendar_id, created_at);
