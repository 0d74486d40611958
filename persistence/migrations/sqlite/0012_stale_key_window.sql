-- The stale-key window (see the Postgres migration).
ALTER TABLE key_credential_devices ADD COLUMN removal_requested_at INTEGER;
