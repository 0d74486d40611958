-- Signed Merkle roots over stretches of each audit chain (see the Postgres migration).
CREATE TABLE lock_audit_roots (
  tenant_id TEXT NOT NULL,
  property_id TEXT NOT NULL,
  from_seq INTEGER NOT NULL,
  to_seq INTEGER NOT NULL,
  merkle_root TEXT NOT NULL,
  signature TEXT NOT NULL,
  key_id TEXT NOT NULL,
  sealed_at INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, property_id, from_seq)
);
