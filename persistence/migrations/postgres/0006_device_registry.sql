-- The device registry (spec 003 §2). D-1: vendorDeviceRef is unique within (tenant,
-- property, vendor); the ref is encrypted, so uniqueness holds on its HMAC blind index
-- (DESIGN §6). D-4: battery in 0..100, threshold in 5..50. Health columns are the last
-- probe's reading; `health_probed_at` is null until the first probe.
ALTER TABLE lock_devices ADD COLUMN vendor_device_ref_hash text;
ALTER TABLE lock_devices ADD COLUMN battery_percent smallint
  CHECK (battery_percent BETWEEN 0 AND 100);
ALTER TABLE lock_devices ADD COLUMN battery_low_threshold smallint NOT NULL DEFAULT 20
  CHECK (battery_low_threshold BETWEEN 5 AND 50);
ALTER TABLE lock_devices ADD COLUMN firmware text;
ALTER TABLE lock_devices ADD COLUMN clock_skew_ms bigint;
ALTER TABLE lock_devices ADD COLUMN last_seen_at timestamptz;
ALTER TABLE lock_devices ADD COLUMN health_probed_at timestamptz;
CREATE UNIQUE INDEX ux_lock_devices_vendor_ref
  ON lock_devices (tenant_id, property_id, vendor, vendor_device_ref_hash);
