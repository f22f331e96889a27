-- The first unserved request time a claim consumed, kept until a sync succeeds:
-- the start of the notification-to-synced latency (chronos_notification_to_sync_seconds).
ALTER TABLE calendar_sync_state ADD COLUMN sync_claimed_request_at TIMESTAMP;
