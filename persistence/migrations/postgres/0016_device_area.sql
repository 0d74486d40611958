-- Master-key area scopes (issue 14, spec 003 §4): a door may belong to a common area or the
-- back of house. Spec 004's lock_devices has no such column and lock_device_rooms links
-- doors to guest rooms only, so the area is the device's own (configured with the device;
-- ARCHITECTURE.md "Master-key scopes"). NULL: a door of rooms only.
ALTER TABLE lock_devices ADD COLUMN area text
  CHECK (area IN ('lobby', 'gym', 'pool', 'spa', 'parking', 'back_of_house'));
CREATE INDEX ix_lock_devices_area ON lock_devices (tenant_id, property_id, area)
  WHERE area IS NOT NULL AND decommissioned_at IS NULL;
