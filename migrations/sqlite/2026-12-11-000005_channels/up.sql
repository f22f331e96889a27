-- The channel states and push modes are the domain's enums
-- (sync_domain::channel::ChannelState, PushMode): the database refuses others.
-- SQLite cannot add a CHECK to an existing table without rebuilding it, so
-- triggers enforce the same sets.
CREATE TRIGGER watch_channels_state_known_insert
    BEFORE INSERT ON watch_channels
    WHEN NEW.state NOT IN ('registering', 'active', 'retiring', 'stopped')
BEGIN
    SELECT RAISE(ABORT, 'watch_channels.state must be registering, active, retiring or stopped');
END;
CREATE TRIGGER watch_channels_state_known_update
    BEFORE UPDATE OF state ON watch_channels
    WHEN NEW.state NOT IN ('registering', 'active', 'retiring', 'stopped')
BEGIN
    SELECT RAISE(ABORT, 'watch_channels.state must be registering, active, retiring or stopped');
END;
CREATE TRIGGER calendar_sync_state_push_mode_known_insert
    BEFORE INSERT ON calendar_sync_state
    WHEN NEW.push_mode NOT IN ('push', 'polling')
BEGIN
    SELECT RAISE(ABORT, 'calendar_sync_state.push_mode must be push or polling');
END;
CREATE TRIGGER calendar_sync_state_push_mode_known_update
    BEFORE UPDATE OF push_mode ON calendar_sync_state
    WHEN NEW.push_mode NOT IN ('push', 'polling')
BEGIN
    SELECT RAISE(ABORT, 'calendar_sync_state.push_mode must be push or polling');
END;

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
