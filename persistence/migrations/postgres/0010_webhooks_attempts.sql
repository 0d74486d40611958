-- spec 004 §3 webhook_inbox and key_credential_attempts (issue 6).
-- webhook_inbox is unique per tenant (DESIGN §5: unique keys include tenant_id); it keeps a
-- sanitized payload only (a TTLock record carries the PIN or card number it was opened with).
CREATE TABLE webhook_inbox (
  id text PRIMARY KEY,
  tenant_id uuid NOT NULL,
  vendor text NOT NULL,
  external_event_id text NOT NULL,
  type text NOT NULL,
  payload jsonb NOT NULL,
  signature_ok boolean NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now(),
  processed_at timestamptz,
  processed_outcome text,
  CONSTRAINT ux_webhook_inbox UNIQUE (tenant_id, vendor, external_event_id)
);
CREATE INDEX ix_webhook_inbox_unprocessed ON webhook_inbox (received_at) WHERE processed_at IS NULL;
ALTER TABLE webhook_inbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_inbox FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_inbox_tenant_isolation ON webhook_inbox
  USING (tenant_id::text = current_setting('app.tenant_id', true))
  WITH CHECK (tenant_id::text = current_setting('app.tenant_id', true));

-- A-1 (append-only, a trigger), A-2 (unique per tenant, vendor, event id).
CREATE TABLE key_credential_attempts (
  id text PRIMARY KEY,
  tenant_id uuid NOT NULL,
  property_id text NOT NULL,
  key_credential_id text,
  device_id text NOT NULL,
  attempted_at timestamptz NOT NULL,
  ingested_at timestamptz NOT NULL DEFAULT now(),
  outcome text NOT NULL CHECK (outcome IN ('granted','denied')),
  deny_reason text CHECK (deny_reason IN ('expired','suspended','revoked','wrong_room','outside_window','unknown_credential','lock_offline','other')),
  vendor text NOT NULL,
  vendor_event_id text NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT ux_kca_vendor_event UNIQUE (tenant_id, vendor, vendor_event_id),
  FOREIGN KEY (tenant_id, key_credential_id) REFERENCES key_credentials (tenant_id, id)
);
CREATE INDEX ix_kca_credential_time ON key_credential_attempts (key_credential_id, attempted_at DESC);
CREATE INDEX ix_kca_property_time ON key_credential_attempts (tenant_id, property_id, attempted_at DESC);
CREATE INDEX ix_kca_device_time ON key_credential_attempts (device_id, attempted_at DESC);
CREATE OR REPLACE FUNCTION reject_kca_mutation() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'key_credential_attempts is append-only'; END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER trg_kca_no_update BEFORE UPDATE OR DELETE ON key_credential_attempts
  FOR EACH ROW EXECUTE FUNCTION reject_kca_mutation();
ALTER TABLE key_credential_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE key_credential_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY key_credential_attempts_tenant_isolation ON key_credential_attempts
  USING (tenant_id::text = current_setting('app.tenant_id', true))
  WITH CHECK (tenant_id::text = current_setting('app.tenant_id', true));
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lockstep_app') THEN
    GRANT SELECT, INSERT, UPDATE ON webhook_inbox TO lockstep_app;
    GRANT SELECT, INSERT ON key_credential_attempts TO lockstep_app;
  END IF;
END $$;
