-- tenant.property.deactivated is a fact about the property (issue 14): kept so that a
-- confirmation or a shift start that arrives after it (or was queued before its step ran)
-- issues no key there. Spec 002 names no reactivation; an operator removes the row.
CREATE TABLE deactivated_properties (
  tenant_id uuid NOT NULL,
  property_id text NOT NULL,
  deactivated_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, property_id)
);
ALTER TABLE deactivated_properties ENABLE ROW LEVEL SECURITY;
ALTER TABLE deactivated_properties FORCE ROW LEVEL SECURITY;
CREATE POLICY deactivated_properties_tenant_isolation ON deactivated_properties
  USING (tenant_id::text = current_setting('app.tenant_id', true))
  WITH CHECK (tenant_id::text = current_setting('app.tenant_id', true));
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lockstep_app') THEN
    GRANT SELECT, INSERT ON deactivated_properties TO lockstep_app;
  END IF;
END $$;
