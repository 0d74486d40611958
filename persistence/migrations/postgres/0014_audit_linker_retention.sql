-- Issues 11 and 13: the audit chain linked off the writers' path, and retention (spec 004 §8).
--
-- A step's transaction inserts its lock_audit rows unlinked (chain_seq, prev_hash and
-- row_hash NULL; the columns have been nullable since 0008) and never touches
-- lock_audit_heads, so steps of one property no longer wait on each other's commit. The
-- linker (the worker role) takes a chain's head in its own short transaction and links the
-- pending rows in (created_at, id) order, gap-free. Rows written before 0008 (no link
-- either) are linked by its first pass.
CREATE INDEX ix_lock_audit_pending ON lock_audit (tenant_id, property_id, created_at, id)
  WHERE chain_seq IS NULL;

-- The retention anchor: the last pruned row's (seq, hash) per chain. Verification starts
-- from it instead of the genesis hash; rows are pruned only under a signed root.
ALTER TABLE lock_audit_heads ADD COLUMN pruned_through_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE lock_audit_heads ADD COLUMN pruned_through_hash text NOT NULL
  DEFAULT '0000000000000000000000000000000000000000000000000000000000000000';
ALTER TABLE lock_audit_heads ADD CONSTRAINT ck_lock_audit_heads_pruned
  CHECK (pruned_through_seq BETWEEN 0 AND seq);

-- What retention deletes before, per table (not tenant data). The append-only trigger of
-- key_credential_attempts lets a DELETE through only for rows older than its horizon, so a
-- delete has to be declared as retention first.
CREATE TABLE retention_horizons (
  table_name text PRIMARY KEY,
  prune_before timestamptz NOT NULL
);
CREATE OR REPLACE FUNCTION reject_kca_mutation() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'DELETE' AND OLD.attempted_at <
      (SELECT prune_before FROM retention_horizons WHERE table_name = 'key_credential_attempts') THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'key_credential_attempts is append-only';
END;
$$ LANGUAGE plpgsql;

-- The retention scans, oldest first.
CREATE INDEX ix_kca_attempted ON key_credential_attempts (attempted_at);
CREATE INDEX ix_outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX ix_inbox_processed ON inbox (processed_at);
CREATE INDEX ix_webhook_inbox_processed ON webhook_inbox (processed_at) WHERE processed_at IS NOT NULL;
CREATE INDEX ix_lock_devices_decommissioned ON lock_devices (decommissioned_at) WHERE decommissioned_at IS NOT NULL;
CREATE INDEX ix_offline_issuance_revoked ON offline_issuance (revoked_at) WHERE revoked_at IS NOT NULL;

DO $$
BEGIN
  -- writers never touch the heads any more; the service role only reads them
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lockstep_app') THEN
    REVOKE INSERT, UPDATE ON lock_audit_heads FROM lockstep_app;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lockstep_worker') THEN
    -- the linker: the heads, and the link columns of pending rows (nothing else of a row)
    GRANT SELECT, INSERT, UPDATE ON lock_audit_heads TO lockstep_worker;
    GRANT SELECT ON lock_audit, lock_audit_roots TO lockstep_worker;
    GRANT UPDATE (chain_seq, prev_hash, row_hash) ON lock_audit TO lockstep_worker;
    -- retention
    GRANT DELETE ON lock_audit, key_credential_attempts, webhook_inbox, outbox, inbox,
      offline_issuance, lock_devices, lock_device_rooms, key_credential_devices TO lockstep_worker;
    GRANT SELECT ON key_credential_attempts, webhook_inbox, inbox, offline_issuance,
      lock_devices, lock_device_rooms TO lockstep_worker;
    GRANT SELECT, INSERT, UPDATE ON retention_horizons TO lockstep_worker;
  END IF;
END $$;
