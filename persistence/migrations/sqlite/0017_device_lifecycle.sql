-- Device lifecycle (see the Postgres migration). SQLite cannot change a column's default
-- in place: the store writes 25 explicitly when it registers a device.
UPDATE lock_devices SET battery_low_threshold = 25 WHERE battery_low_threshold = 20;
ALTER TABLE lock_devices ADD COLUMN probe_failures INTEGER NOT NULL DEFAULT 0
  CHECK (probe_failures >= 0);
