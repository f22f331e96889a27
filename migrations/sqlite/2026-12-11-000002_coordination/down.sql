DROP TRIGGER calendar_sync_state_sync_state_update;
DROP TRIGGER calendar_sync_state_sync_state_insert;
DROP TABLE chronos_instances;
ALTER TABLE calendar_sync_state DROP COLUMN claim_epoch;
DROP TABLE sync_requests;
