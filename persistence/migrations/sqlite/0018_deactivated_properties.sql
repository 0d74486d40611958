-- See the Postgres migration: a property's deactivation, kept so later confirmations and
-- shift starts issue no key there.
CREATE TABLE deactivated_properties (
  tenant_id TEXT NOT NULL,
  property_id TEXT NOT NULL,
  deactivated_at INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, property_id)
);
