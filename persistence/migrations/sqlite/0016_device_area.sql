-- Master-key area scopes (see the Postgres migration).
ALTER TABLE lock_devices ADD COLUMN area TEXT
  CHECK (area IN ('lobby', 'gym', 'pool', 'spa', 'parking', 'back_of_house'));
CREATE INDEX ix_lock_devices_area ON lock_devices (tenant_id, property_id, area)
  WHERE area IS NOT NULL AND decommissioned_at IS NULL;
