-- spec 004 §3 offline_issuance (O-1..O-3); the serial unique per tenant (DESIGN §5).
CREATE TABLE offline_issuance (
  id text PRIMARY KEY,
  tenant_id uuid NOT NULL,
  property_id text NOT NULL,
  desktop_device_id text NOT NULL,
  serial text NOT NULL,
  public_key_ed25519 text NOT NULL,
  allowed_kinds jsonb NOT NULL,
  max_valid_window_hours integer NOT NULL DEFAULT 48 CHECK (max_valid_window_hours BETWEEN 1 AND 48),
  issued_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  revoked_at timestamptz,
  revoke_reason text CHECK (revoke_reason IN ('rotation','desktop_unbound','tenant_request','compromise')),
  CONSTRAINT ux_offline_issuance_serial UNIQUE (tenant_id, serial),
  CONSTRAINT ck_offline_issuance_o1 CHECK (expires_at = issued_at + interval '2160 hours')
);
CREATE INDEX ix_offline_issuance_property_active ON offline_issuance (tenant_id, property_id) WHERE revoked_at IS NULL;
CREATE INDEX ix_offline_issuance_expiry ON offline_issuance (expires_at) WHERE revoked_at IS NULL;
ALTER TABLE offline_issuance ENABLE ROW LEVEL SECURITY;
ALTER TABLE offline_issuance FORCE ROW LEVEL SECURITY;
CREATE POLICY offline_issuance_tenant_isolation ON offline_issuance
  USING (tenant_id::text = current_setting('app.tenant_id', true))
  WITH CHECK (tenant_id::text = current_setting('app.tenant_id', true));
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lockstep_app') THEN
    GRANT SELECT, INSERT, UPDATE ON offline_issuance TO lockstep_app;
  END IF;
END $$;
