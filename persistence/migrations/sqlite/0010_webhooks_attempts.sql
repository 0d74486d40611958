-- spec 004 §3 webhook_inbox and key_credential_attempts (see the Postgres migration).
CREATE TABLE webhook_inbox (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  vendor TEXT NOT NULL,
  external_event_id TEXT NOT NULL,
  type TEXT NOT NULL,
  payload TEXT NOT NULL,
  signature_ok INTEGER NOT NULL,
  received_at INTEGER NOT NULL,
  processed_at INTEGER,
  processed_outcome TEXT,
  UNIQUE (tenant_id, vendor, external_event_id)
);
CREATE TABLE key_credential_attempts (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  property_id TEXT NOT NULL,
  key_credential_id TEXT,
  device_id TEXT NOT NULL,
  attempted_at INTEGER NOT NULL,
  ingested_at INTEGER NOT NULL,
  outcome TEXT NOT NULL CHECK (outcome IN ('granted','denied')),
  deny_reason TEXT,
  vendor TEXT NOT NULL,
  vendor_event_id TEXT NOT NULL,
  metadata TEXT NOT NULL DEFAULT '{}',
  UNIQUE (tenant_id, vendor, vendor_event_id)
);
CREATE INDEX ix_kca_credential_time ON key_credential_attempts (key_credential_id, attempted_at DESC);
-- A-1: append-only
CREATE TRIGGER trg_kca_no_update BEFORE UPDATE ON key_credential_attempts
BEGIN SELECT RAISE(ABORT, 'key_credential_attempts is append-only'); END;
CREATE TRIGGER trg_kca_no_delete BEFORE DELETE ON key_credential_attempts
BEGIN SELECT RAISE(ABORT, 'key_credential_attempts is append-only'); END;
