-- spec 004 §3 offline_issuance (see the Postgres migration).
CREATE TABLE offline_issuance (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  property_id TEXT NOT NULL,
  desktop_device_id TEXT NOT NULL,
  serial TEXT NOT NULL,
  public_key_ed25519 TEXT NOT NULL,
  allowed_kinds TEXT NOT NULL,
  max_valid_window_hours INTEGER NOT NULL CHECK (max_valid_window_hours BETWEEN 1 AND 48),
  issued_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  revoked_at INTEGER,
  revoke_reason TEXT,
  UNIQUE (tenant_id, serial),
  CHECK (expires_at = issued_at + 90 * 86400000)
);
