-- The stale-key window (issue 10/13): when Lockstep learned that a credential must leave a
-- device (the cancel, checkout, revoke or suspend that caused it arrived), kept on the
-- door-truth row until the credential is wanted on the door again.
ALTER TABLE key_credential_devices ADD COLUMN removal_requested_at timestamptz;
