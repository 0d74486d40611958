-- Certificate rotation (issue 12): a renewed certificate names the one it renews, so the
-- first authentication with the new one revokes the old (revokeReason 'rotation') and any
-- other renewal of it that was never used.
ALTER TABLE offline_issuance ADD COLUMN replaces_id text;
CREATE INDEX ix_offline_issuance_replaces ON offline_issuance (tenant_id, replaces_id) WHERE replaces_id IS NOT NULL;
