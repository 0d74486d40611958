-- iam.user.deactivated is a fact about the user, not about a master key: kept so a shift
-- start that arrives after it (reordered delivery) issues no master key.
CREATE TABLE deactivated_users (
  tenant_id uuid NOT NULL,
  user_id text NOT NULL,
  deactivated_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, user_id)
);
ALTER TABLE deactivated_users ENABLE ROW LEVEL SECURITY;
ALTER TABLE deactivated_users FORCE ROW LEVEL SECURITY;
CREATE POLICY deactivated_users_tenant_isolation ON deactivated_users
  USING (tenant_id::text = current_setting('app.tenant_id', true))
  WITH CHECK (tenant_id::text = current_setting('app.tenant_id', true));
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lockstep_app') THEN
    GRANT SELECT, INSERT ON deactivated_users TO lockstep_app;
  END IF;
END $$;
