-- Batched rows have no one-row form: they are dropped (their events stay in the mirror).
DELETE FROM change_log WHERE kind = 'event_batch';
DROP TRIGGER change_log_kind_insert;
DROP TRIGGER change_log_kind_update;
ALTER TABLE change_log DROP COLUMN entries;
ALTER TABLE change_log DROP COLUMN last_position;
CREATE TRIGGER change_log_kind_insert BEFORE INSERT ON change_log
WHEN NEW.kind NOT IN (
    'event_changed', 'event_cancelled', 'event_removed',
    'calendar_connected', 'calendar_full_sync_complete', 'calendar_needs_reauth',
    'calendar_gone', 'calendar_disconnected')
BEGIN
    SELECT RAISE(ABORT, 'change_log.kind is not a known kind');
END;

CREATE TRIGGER change_log_kind_update BEFORE UPDATE OF kind ON change_log
WHEN NEW.kind NOT IN (
    'event_changed', 'event_cancelled', 'event_removed',
    'calendar_connected', 'calendar_full_sync_complete', 'calendar_needs_reauth',
    'calendar_gone', 'calendar_disconnected')
BEGIN
    SELECT RAISE(ABORT, 'change_log.kind is not a known kind');
END;
