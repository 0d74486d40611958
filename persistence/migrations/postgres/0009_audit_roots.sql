-- Signed Merkle roots over stretches of each audit chain (DESIGN §12): the signing key is
-- held outside the database, so a recomputed chain cannot be re-signed.
CREATE TABLE lock_audit_roots (
  tenant_id uuid NOT NULL,
  property_id text NOT NULL,
  from_seq bigint NOT NULL,
  to_seq bigint NOT NULL,
  merkle_root text NOT NULL,
  signature text NOT NULL,
  key_id text NOT NULL,
  sealed_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, property_id, from_seq)
);
ALTER TABLE lock_audit_roots ENABLE ROW LEVEL SECURITY;
ALTER TABLE lock_audit_roots FORCE ROW LEVEL SECURITY;
CREATE POLICY lock_audit_roots_tenant_isolation ON lock_audit_roots
  USING (tenant_id::text = current_setting('app.tenant_id', true))
  WITH CHECK (tenant_id::text = current_setting('app.tenant_id', true));
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lockstep_app') THEN
    GRANT SELECT, INSERT ON lock_audit_roots TO lockstep_app;
  END IF;
END $$;
