-- The channel worker looks for calendars whose channel work is due every tick.
CREATE INDEX calendar_sync_state_channel_due ON calendar_sync_state (channel_next_attempt_at);
