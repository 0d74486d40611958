-- Device lifecycle (issue 14, spec 003 §2). D-4: a device's battery threshold defaults to
-- 25 %, as spec 004 §3's DDL says (`battery_low_threshold_pct ... DEFAULT 25`); until now
-- nothing could set it, so every stored 20 was migration 0006's default and becomes 25.
-- `probe_failures` counts the device's probes its vendor refused in a row (a health alert
-- at 3); a good reading resets it.
ALTER TABLE lock_devices ALTER COLUMN battery_low_threshold SET DEFAULT 25;
UPDATE lock_devices SET battery_low_threshold = 25 WHERE battery_low_threshold = 20;
ALTER TABLE lock_devices ADD COLUMN probe_failures smallint NOT NULL DEFAULT 0
  CHECK (probe_failures >= 0);
