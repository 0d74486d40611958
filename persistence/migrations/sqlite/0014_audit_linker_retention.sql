-- Issues 11 and 13: the audit chain linked off the writers' path, and retention (see the
-- Postgres migration).
CREATE INDEX ix_lock_audit_pending ON lock_audit (tenant_id, property_id, created_at, id)
  WHERE chain_seq IS NULL;
ALTER TABLE lock_audit_heads ADD COLUMN pruned_through_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE lock_audit_heads ADD COLUMN pruned_through_hash TEXT NOT NULL
  DEFAULT '0000000000000000000000000000000000000000000000000000000000000000';
CREATE TABLE retention_horizons (
  table_name TEXT PRIMARY KEY,
  prune_before INTEGER NOT NULL
);

-- lock_audit stays append-only: a row is linked once (only its link columns, only while
-- it has none), and deleted only at or below its chain's retention anchor.
DROP TRIGGER trg_lock_audit_no_update;
CREATE TRIGGER trg_lock_audit_no_update BEFORE UPDATE ON lock_audit
WHEN OLD.chain_seq IS NOT NULL
  OR NEW.id IS NOT OLD.id OR NEW.tenant_id IS NOT OLD.tenant_id
  OR NEW.property_id IS NOT OLD.property_id OR NEW.key_credential_id IS NOT OLD.key_credential_id
  OR NEW.master_key_id IS NOT OLD.master_key_id OR NEW.device_id IS NOT OLD.device_id
  OR NEW.actor_user_id IS NOT OLD.actor_user_id OR NEW.actor_kind IS NOT OLD.actor_kind
  OR NEW.action IS NOT OLD.action OR NEW.reason IS NOT OLD.reason
  OR NEW.vendor IS NOT OLD.vendor OR NEW.trace_id IS NOT OLD.trace_id
  OR NEW.created_at IS NOT OLD.created_at OR NEW.payload IS NOT OLD.payload
BEGIN SELECT RAISE(ABORT, 'lock_audit is append-only'); END;
DROP TRIGGER trg_lock_audit_no_delete;
CREATE TRIGGER trg_lock_audit_no_delete BEFORE DELETE ON lock_audit
WHEN OLD.chain_seq IS NULL OR OLD.chain_seq > COALESCE(
  (SELECT h.pruned_through_seq FROM lock_audit_heads h
    WHERE h.tenant_id = OLD.tenant_id AND h.property_id = OLD.property_id), 0)
BEGIN SELECT RAISE(ABORT, 'lock_audit is append-only'); END;

-- A-1: key_credential_attempts are deleted only by retention, below its horizon.
DROP TRIGGER trg_kca_no_delete;
CREATE TRIGGER trg_kca_no_delete BEFORE DELETE ON key_credential_attempts
WHEN OLD.attempted_at >= COALESCE(
  (SELECT prune_before FROM retention_horizons WHERE table_name = 'key_credential_attempts'),
  -9223372036854775808)
BEGIN SELECT RAISE(ABORT, 'key_credential_attempts is append-only'); END;

CREATE INDEX ix_kca_attempted ON key_credential_attempts (attempted_at);
CREATE INDEX ix_outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX ix_inbox_processed ON inbox (processed_at);
CREATE INDEX ix_webhook_inbox_processed ON webhook_inbox (processed_at) WHERE processed_at IS NOT NULL;
CREATE INDEX ix_lock_devices_decommissioned ON lock_devices (decommissioned_at) WHERE decommissioned_at IS NOT NULL;
CREATE INDEX ix_offline_issuance_revoked ON offline_issuance (revoked_at) WHERE revoked_at IS NOT NULL;
