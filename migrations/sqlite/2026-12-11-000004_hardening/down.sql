ALTER TABLE google_credentials DROP COLUMN key_id;
