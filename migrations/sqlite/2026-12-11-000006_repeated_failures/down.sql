ALTER TABLE calendar_sync_state DROP COLUMN retry_stopped_at;
ALTER TABLE calendar_sync_state DROP COLUMN failure_repeats;
ALTER TABLE calendar_sync_state DROP COLUMN failure_fingerprint;
