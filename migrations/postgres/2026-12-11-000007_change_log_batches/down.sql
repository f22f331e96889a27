-- Batched rows have no one-row form: they are dropped (their events stay in the mirror).
DELETE FROM change_log WHERE kind = 'event_batch';
ALTER TABLE change_log DROP CONSTRAINT change_log_kind;
ALTER TABLE change_log ADD CONSTRAINT change_log_kind CHECK (kind IN (
    'event_changed', 'event_cancelled', 'event_removed',
    'calendar_connected', 'calendar_full_sync_complete', 'calendar_needs_reauth',
    'calendar_gone', 'calendar_disconnected'));
ALTER TABLE change_log DROP COLUMN entries;
ALTER TABLE change_log DROP CONSTRAINT change_log_span;
ALTER TABLE change_log DROP COLUMN last_position;
ALTER TABLE change_log ALTER COLUMN position ADD GENERATED ALWAYS AS IDENTITY;
SELECT setval(pg_get_serial_sequence('change_log', 'position'),
    GREATEST((SELECT MAX(position) FROM change_log), (SELECT pruned_through FROM change_feed_state), 1));
