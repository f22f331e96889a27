-- A sync failure that repeats identically on the same page (sync_domain::repeats):
-- the last counted failure's fingerprint, how many times in a row it happened,
-- and when the retries stopped (NULL while retrying). All three are cleared by
-- a successful sync.
ALTER TABLE calendar_sync_state ADD COLUMN failure_fingerprint TEXT;
ALTER TABLE calendar_sync_state ADD COLUMN failure_repeats INTEGER NOT NULL DEFAULT 0;
ALTER TABLE calendar_sync_state ADD COLUMN retry_stopped_at TIMESTAMP;
