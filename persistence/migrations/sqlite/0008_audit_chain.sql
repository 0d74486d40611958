-- Tamper-evident audit (see the Postgres migration).
ALTER TABLE lock_audit ADD COLUMN chain_seq INTEGER;
ALTER TABLE lock_audit ADD COLUMN prev_hash TEXT;
ALTER TABLE lock_audit ADD COLUMN row_hash TEXT;
CREATE UNIQUE INDEX ux_lock_audit_chain ON lock_audit (tenant_id, property_id, chain_seq);
CREATE TABLE lock_audit_heads (
  tenant_id TEXT NOT NULL,
  property_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  head_hash TEXT NOT NULL,
  PRIMARY KEY (tenant_id, property_id)
);
