-- DESIGN §6: a vendor account shared by several properties has one request rate, whichever
-- node or partition serves them: one GCRA row per account. `tat_us` is the theoretical
-- arrival time (µs since the epoch) of the next request the account may send.
CREATE TABLE vendor_rate_limits (
  tenant_id uuid NOT NULL,
  account_key text NOT NULL,
  tat_us bigint NOT NULL,
  PRIMARY KEY (tenant_id, account_key)
);
ALTER TABLE vendor_rate_limits ENABLE ROW LEVEL SECURITY;
ALTER TABLE vendor_rate_limits FORCE ROW LEVEL SECURITY;
CREATE POLICY vendor_rate_limits_tenant_isolation ON vendor_rate_limits
  USING (tenant_id::text = current_setting('app.tenant_id', true))
  WITH CHECK (tenant_id::text = current_setting('app.tenant_id', true));
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lockstep_app') THEN
    GRANT SELECT, INSERT, UPDATE ON vendor_rate_limits TO lockstep_app;
  END IF;
END $$;
