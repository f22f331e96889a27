-- Which key (crypto::KeyId, hex) sealed the refresh token; NULL for values
-- sealed before key ids existed. Startup checks that every id here is a key
-- it holds, so a wrong encryption_key stops the process instead of every sync.
ALTER TABLE google_credentials ADD COLUMN key_id TEXT;
