-- Certificate rotation (see the Postgres migration).
ALTER TABLE offline_issuance ADD COLUMN replaces_id TEXT;
CREATE INDEX ix_offline_issuance_replaces ON offline_issuance (tenant_id, replaces_id) WHERE replaces_id IS NOT NULL;
