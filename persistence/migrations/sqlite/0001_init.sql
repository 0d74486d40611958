-- Lockstep schema, SQLite (embedded mode). Same tables and constraints as Postgres, minus
-- row-level security (one tenant boundary per file is the embedded deployment's model;
-- every query still filters on tenant_id). Timestamps are integer Unix milliseconds so
-- they order and compare correctly; JSON is text.

CREATE TABLE key_credentials (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  property_id TEXT NOT NULL,
  holder_kind TEXT NOT NULL CHECK (holder_kind IN ('guest','staff_master')),
  reservation_id TEXT,
  guest_id TEXT,
  staff_user_id TEXT,
  kind TEXT NOT NULL CHECK (kind IN ('mobile_app','pin_code','rfid_card','qr_code','nfc_tag')),
  scope TEXT NOT NULL DEFAULT '{}',
  valid_from INTEGER NOT NULL,
  valid_until INTEGER NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('requested','pending','active','suspended','revoked','failed')),
  vendor TEXT NOT NULL CHECK (vendor IN ('ttlock','salto','assa-abloy','generic-wiegand','kisi','brivo')),
  vendor_adapter_id TEXT NOT NULL,
  provisional INTEGER NOT NULL DEFAULT 0,
  idempotency_key TEXT NOT NULL,
  issued_at INTEGER,
  suspended_at INTEGER,
  revoked_at INTEGER,
  failure_reason TEXT,
  suspend_reason TEXT,
  revoke_reason TEXT,
  replaces_id TEXT,
  replaced_by_id TEXT,
  version INTEGER NOT NULL DEFAULT 1,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  UNIQUE (tenant_id, id),
  FOREIGN KEY (tenant_id, replaces_id) REFERENCES key_credentials (tenant_id, id),
  FOREIGN KEY (tenant_id, replaced_by_id) REFERENCES key_credentials (tenant_id, id),
  CHECK (valid_from < valid_until),
  CHECK (
    (holder_kind = 'guest' AND reservation_id IS NOT NULL AND guest_id IS NOT NULL AND staff_user_id IS NULL)
    OR (holder_kind = 'staff_master' AND staff_user_id IS NOT NULL AND reservation_id IS NULL)
  ),
  CHECK (provisional = 0 OR valid_until <= valid_from + 48 * 3600 * 1000)
);
CREATE INDEX ix_key_credentials_reservation_id ON key_credentials (tenant_id, reservation_id) WHERE reservation_id IS NOT NULL;
CREATE INDEX ix_key_credentials_property_state ON key_credentials (tenant_id, property_id, state);
CREATE UNIQUE INDEX ux_key_credentials_idem ON key_credentials (tenant_id, idempotency_key);

CREATE TABLE key_credential_rooms (
  tenant_id TEXT NOT NULL,
  key_credential_id TEXT NOT NULL,
  room_id TEXT NOT NULL,
  PRIMARY KEY (key_credential_id, room_id),
  FOREIGN KEY (tenant_id, key_credential_id) REFERENCES key_credentials (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX ix_kc_rooms_tenant_room ON key_credential_rooms (tenant_id, room_id);

CREATE TABLE vendor_adapters (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  property_id TEXT NOT NULL,
  vendor TEXT NOT NULL CHECK (vendor IN ('ttlock','salto','assa-abloy','generic-wiegand','kisi','brivo')),
  environment TEXT NOT NULL CHECK (environment IN ('sandbox','production')),
  capabilities TEXT NOT NULL,
  enabled INTEGER NOT NULL DEFAULT 1,
  precedence INTEGER NOT NULL DEFAULT 100,
  health TEXT NOT NULL DEFAULT '{}',
  config_ciphertext BLOB NOT NULL,
  config_kms_version TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  UNIQUE (tenant_id, id),
  UNIQUE (tenant_id, property_id, vendor, environment)
);

CREATE TABLE lock_devices (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  property_id TEXT NOT NULL,
  vendor TEXT NOT NULL,
  vendor_adapter_id TEXT NOT NULL,
  vendor_device_ref_ciphertext BLOB NOT NULL,
  vendor_device_ref_kms_version TEXT NOT NULL,
  label TEXT NOT NULL,
  capabilities TEXT NOT NULL,
  online INTEGER NOT NULL DEFAULT 1,
  registered_at INTEGER NOT NULL,
  decommissioned_at INTEGER,
  UNIQUE (tenant_id, id),
  FOREIGN KEY (tenant_id, vendor_adapter_id) REFERENCES vendor_adapters (tenant_id, id)
);

CREATE TABLE lock_device_rooms (
  tenant_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  room_id TEXT NOT NULL,
  PRIMARY KEY (device_id, room_id),
  FOREIGN KEY (tenant_id, device_id) REFERENCES lock_devices (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX ix_ldr_room ON lock_device_rooms (tenant_id, room_id);

CREATE TABLE key_credential_devices (
  tenant_id TEXT NOT NULL,
  key_credential_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  desired TEXT NOT NULL CHECK (desired IN ('present','absent')),
  sync TEXT NOT NULL CHECK (sync IN ('pending','confirmed','failed')),
  pin_ciphertext BLOB,
  pin_kms_version TEXT,
  vendor_ref_ciphertext BLOB,
  vendor_ref_kms_version TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  pin_collisions INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (key_credential_id, device_id),
  FOREIGN KEY (tenant_id, key_credential_id) REFERENCES key_credentials (tenant_id, id) ON DELETE CASCADE,
  FOREIGN KEY (tenant_id, device_id) REFERENCES lock_devices (tenant_id, id)
);

CREATE TABLE outbox (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  aggregate_id TEXT NOT NULL,
  topic TEXT NOT NULL,
  payload TEXT NOT NULL,
  envelope TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  published_at INTEGER,
  publish_attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL,
  last_error TEXT
);
CREATE INDEX ix_outbox_unpublished ON outbox (next_attempt_at) WHERE published_at IS NULL;

CREATE TABLE inbox (
  message_id TEXT NOT NULL,
  consumer_name TEXT NOT NULL,
  tenant_id TEXT NOT NULL,
  topic TEXT NOT NULL,
  processed_at INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, message_id, consumer_name)
);

CREATE TABLE mailbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  tenant_id TEXT NOT NULL,
  property_id TEXT NOT NULL,
  partition INTEGER NOT NULL,
  subject TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('event','drive')),
  message_id TEXT,
  topic TEXT,
  credential_id TEXT,
  payload TEXT NOT NULL DEFAULT '{}',
  due_at INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  done_at INTEGER,
  outcome TEXT,
  last_error TEXT
);
CREATE INDEX ix_mailbox_subject_open ON mailbox (tenant_id, subject, id) WHERE done_at IS NULL;
CREATE INDEX ix_mailbox_partition_due ON mailbox (partition, due_at) WHERE done_at IS NULL;
CREATE UNIQUE INDEX ux_mailbox_open_drive ON mailbox (tenant_id, credential_id) WHERE done_at IS NULL AND kind = 'drive';

CREATE TABLE key_credential_saga (
  tenant_id TEXT NOT NULL,
  subject TEXT NOT NULL,
  state TEXT NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (tenant_id, subject)
);

CREATE TABLE partition_epochs (
  partition INTEGER PRIMARY KEY,
  epoch INTEGER NOT NULL,
  owner TEXT NOT NULL,
  taken_at INTEGER NOT NULL
);

CREATE TABLE lock_audit (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  property_id TEXT NOT NULL,
  key_credential_id TEXT,
  master_key_id TEXT,
  device_id TEXT,
  actor_user_id TEXT,
  actor_kind TEXT NOT NULL,
  action TEXT NOT NULL,
  reason TEXT,
  vendor TEXT,
  trace_id TEXT,
  created_at INTEGER NOT NULL,
  payload TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX ix_lock_audit_credential ON lock_audit (key_credential_id, created_at) WHERE key_credential_id IS NOT NULL;

-- lock_audit is append-only here too.
CREATE TRIGGER trg_lock_audit_no_update BEFORE UPDATE ON lock_audit
BEGIN SELECT RAISE(ABORT, 'lock_audit is append-only'); END;
CREATE TRIGGER trg_lock_audit_no_delete BEFORE DELETE ON lock_audit
BEGIN SELECT RAISE(ABORT, 'lock_audit is append-only'); END;
