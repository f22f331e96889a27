-- The channel worker's claim, every tick, asks for calendars never scheduled
-- (NULL) and for those due by now, each as one range of this index. Only
-- calendars that may get channel work are in it: polling ones keep a NULL
-- schedule, and gone ones keep their last, which the ranges would otherwise
-- read again every tick. The predicate is the claim's literal SQL.
DROP INDEX calendar_sync_state_channel_due;
CREATE INDEX calendar_sync_state_channel_due ON calendar_sync_state (channel_next_attempt_at)
    WHERE push_mode = 'push' AND sync_state <> 'gone';
