-- Tamper-evident audit (DESIGN §12): each lock_audit row is a link of a hash chain per
-- (tenant, property), numbered without gaps; lock_audit_heads holds each chain's last
-- link and is locked by the transaction that appends, so links never fork.
ALTER TABLE lock_audit ADD COLUMN chain_seq bigint;
ALTER TABLE lock_audit ADD COLUMN prev_hash text;
ALTER TABLE lock_audit ADD COLUMN row_hash text;
CREATE UNIQUE INDEX ux_lock_audit_chain ON lock_audit (tenant_id, property_id, chain_seq);
CREATE TABLE lock_audit_heads (
  tenant_id uuid NOT NULL,
  property_id text NOT NULL,
  seq bigint NOT NULL,
  head_hash text NOT NULL,
  PRIMARY KEY (tenant_id, property_id)
);
ALTER TABLE lock_audit_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE lock_audit_heads FORCE ROW LEVEL SECURITY;
CREATE POLICY lock_audit_heads_tenant_isolation ON lock_audit_heads
  USING (tenant_id::text = current_setting('app.tenant_id', true))
  WITH CHECK (tenant_id::text = current_setting('app.tenant_id', true));
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lockstep_app') THEN
    GRANT SELECT, INSERT, UPDATE ON lock_audit_heads TO lockstep_app;
  END IF;
  -- the verifier lists the chains across tenants, then reads each as its tenant
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lockstep_worker') THEN
    GRANT SELECT ON lock_audit_heads TO lockstep_worker;
  END IF;
END $$;
