ALTER TABLE calendar_sync_state DROP CONSTRAINT calendar_sync_state_sync_state_valid;
DROP TABLE chronos_instances;
ALTER TABLE calendar_sync_state DROP COLUMN claim_epoch;
DROP TABLE sync_requests;
