DROP TABLE calendar_events;
DROP TABLE watch_channels;
DROP TABLE calendar_sync_state;
DROP TABLE google_credentials;
