-- The change feed (docs/change-feed.md): one row per change applied to the
-- mirror or calendar transition, written in the same transaction as the change.
-- SQLite has one writer, so positions are in commit order; AUTOINCREMENT never
-- reuses a position, even after retention removed the highest one.
CREATE TABLE change_log (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    calendar_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    event_id TEXT,
    -- the event resource as Google returned it; NULL for removals and calendar entries
    event_json TEXT,
    at TIMESTAMP NOT NULL
);

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

CREATE INDEX change_log_calendar ON change_log (calendar_id, position);
CREATE INDEX change_log_user ON change_log (user_id, position);

-- The highest position retention has removed: a cursor below it has missed entries (410).
CREATE TABLE change_feed_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_through BIGINT NOT NULL
);
INSERT INTO change_feed_state (id, pruned_through) VALUES (1, 0);
