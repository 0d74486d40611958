-- spec 004 §3 vendor_credentials: where an adapter's secrets live (pointers only, V-2) and
-- the SHA-256 fingerprint of their current bytes, for change detection (US-MEL-0081).
CREATE TABLE vendor_credentials (
  id text PRIMARY KEY,
  tenant_id uuid NOT NULL,
  property_id text NOT NULL,
  vendor text NOT NULL,
  environment text NOT NULL,
  secret_resource_name text NOT NULL,
  rotates_at timestamptz NOT NULL,
  fingerprint_sha256 text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT ux_vendor_credentials UNIQUE (tenant_id, property_id, vendor, environment)
);
CREATE INDEX ix_vendor_credentials_rotation ON vendor_credentials (rotates_at);
ALTER TABLE vendor_credentials ENABLE ROW LEVEL SECURITY;
ALTER TABLE vendor_credentials FORCE ROW LEVEL SECURITY;
CREATE POLICY vendor_credentials_tenant_isolation ON vendor_credentials
  USING (tenant_id::text = current_setting('app.tenant_id', true))
  WITH CHECK (tenant_id::text = current_setting('app.tenant_id', true));
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lockstep_app') THEN
    GRANT SELECT, INSERT, UPDATE ON vendor_credentials TO lockstep_app;
  END IF;
END $$;
