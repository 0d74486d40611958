-- DESIGN §6: one GCRA row per vendor account (see the Postgres migration).
CREATE TABLE vendor_rate_limits (
  tenant_id TEXT NOT NULL,
  account_key TEXT NOT NULL,
  tat_us INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, account_key)
);
