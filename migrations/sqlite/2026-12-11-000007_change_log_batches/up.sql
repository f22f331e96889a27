-- A sync page's events are logged as rows of up to 250 entries each
-- (kind 'event_batch', the entries in `entries` as a JSON array) instead of one
-- row per event: a row spans positions `position` to `last_position`, one per
-- entry. The writer (SQLite's one) allocates positions from the head.
ALTER TABLE change_log ADD COLUMN last_position INTEGER NOT NULL DEFAULT 0;
UPDATE change_log SET last_position = position;
-- [{"kind": ..., "event_id": ..., "event": {...}}, ...] for 'event_batch' rows, else NULL
ALTER TABLE change_log ADD COLUMN entries TEXT;
DROP TRIGGER change_log_kind_insert;
DROP TRIGGER change_log_kind_update;
CREATE TRIGGER change_log_kind_insert BEFORE INSERT ON change_log
WHEN NEW.kind NOT IN (
    'event_changed', 'event_cancelled', 'event_removed',
    'calendar_connected', 'calendar_full_sync_complete', 'calendar_needs_reauth',
    'calendar_gone', 'calendar_disconnected',
    'event_batch')
BEGIN
    SELECT RAISE(ABORT, 'change_log.kind is not a known kind');
END;

CREATE TRIGGER change_log_kind_update BEFORE UPDATE OF kind ON change_log
WHEN NEW.kind NOT IN (
    'event_changed', 'event_cancelled', 'event_removed',
    'calendar_connected', 'calendar_full_sync_complete', 'calendar_needs_reauth',
    'calendar_gone', 'calendar_disconnected',
    'event_batch')
BEGIN
    SELECT RAISE(ABORT, 'change_log.kind is not a known kind');
END;
