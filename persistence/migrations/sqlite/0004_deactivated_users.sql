CREATE TABLE deactivated_users (
  tenant_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  deactivated_at INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, user_id)
);
