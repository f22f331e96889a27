-- A sync page's events are logged as rows of up to 250 entries each
-- (kind 'event_batch', the entries in `entries` as a JSON array) instead of one
-- row per event: a row spans positions `position` to `last_position`, one
-- per entry. Positions are now allocated by the writers (under the position
-- lock, from the head), since a row takes a range of them.
ALTER TABLE change_log ALTER COLUMN position DROP IDENTITY;
ALTER TABLE change_log ADD COLUMN last_position BIGINT;
UPDATE change_log SET last_position = position;
ALTER TABLE change_log ALTER COLUMN last_position SET NOT NULL;
-- Readers look back at most 250 positions for the row an entry is in
-- (sync_store::changes::EVENTS_PER_ROW).
ALTER TABLE change_log ADD CONSTRAINT change_log_span
    CHECK (last_position >= position AND last_position - position < 250);
-- [{"kind": ..., "event_id": ..., "event": {...}}, ...] for 'event_batch' rows, else NULL
ALTER TABLE change_log ADD COLUMN entries TEXT;
ALTER TABLE change_log DROP CONSTRAINT change_log_kind;
ALTER TABLE change_log ADD CONSTRAINT change_log_kind CHECK (kind IN (
    'event_changed', 'event_cancelled', 'event_removed',
    'calendar_connected', 'calendar_full_sync_complete', 'calendar_needs_reauth',
    'calendar_gone', 'calendar_disconnected',
    'event_batch'));
-- Compressed with lz4 where the server has it (PostgreSQL 14 and later, built
-- with lz4, as the common distributions are): a row's entries are 70 to 100 kB
-- of JSON, which pglz, the default, compresses four times slower (measured in
-- docs/change-feed.md). Elsewhere the default applies.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE change_log ALTER COLUMN entries SET COMPRESSION lz4';
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'change_log.entries keeps the default compression: %', SQLERRM;
END
$$;
