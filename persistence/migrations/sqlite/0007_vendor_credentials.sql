-- spec 004 §3 vendor_credentials (see the Postgres migration): pointers only (V-2).
CREATE TABLE vendor_credentials (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  property_id TEXT NOT NULL,
  vendor TEXT NOT NULL,
  environment TEXT NOT NULL,
  secret_resource_name TEXT NOT NULL,
  rotates_at INTEGER NOT NULL,
  fingerprint_sha256 TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  UNIQUE (tenant_id, property_id, vendor, environment)
);
CREATE INDEX ix_vendor_credentials_rotation ON vendor_credentials (rotates_at);
