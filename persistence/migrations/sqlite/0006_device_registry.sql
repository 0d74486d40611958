-- The device registry (spec 003 §2): see the Postgres migration. D-1 on the blind index.
ALTER TABLE lock_devices ADD COLUMN vendor_device_ref_hash TEXT;
ALTER TABLE lock_devices ADD COLUMN battery_percent INTEGER
  CHECK (battery_percent BETWEEN 0 AND 100);
ALTER TABLE lock_devices ADD COLUMN battery_low_threshold INTEGER NOT NULL DEFAULT 20
  CHECK (battery_low_threshold BETWEEN 5 AND 50);
ALTER TABLE lock_devices ADD COLUMN firmware TEXT;
ALTER TABLE lock_devices ADD COLUMN clock_skew_ms INTEGER;
ALTER TABLE lock_devices ADD COLUMN last_seen_at INTEGER;
ALTER TABLE lock_devices ADD COLUMN health_probed_at INTEGER;
CREATE UNIQUE INDEX ux_lock_devices_vendor_ref
  ON lock_devices (tenant_id, property_id, vendor, vendor_device_ref_hash);
