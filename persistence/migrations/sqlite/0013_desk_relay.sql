-- Issue 12, the desk path (see the Postgres migration). Times are Unix milliseconds.
CREATE TABLE encoder_sessions (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  property_id TEXT NOT NULL,
  desktop_device_id TEXT NOT NULL,
  encoder_model TEXT NOT NULL,
  transport TEXT NOT NULL CHECK (transport IN ('usb_hid','serial')),
  opened_at INTEGER NOT NULL,
  closed_at INTEGER,
  close_reason TEXT CHECK (close_reason IN ('graceful','usb_disconnect','app_quit','error')),
  connection_id TEXT NOT NULL,
  encoder_id TEXT NOT NULL,
  certificate_id TEXT NOT NULL,
  node_id TEXT NOT NULL,
  close_detail TEXT,
  CHECK ((closed_at IS NULL) = (close_reason IS NULL))
);
CREATE INDEX ix_encoder_sessions_open ON encoder_sessions (tenant_id, property_id) WHERE closed_at IS NULL;
CREATE INDEX ix_encoder_sessions_node_open ON encoder_sessions (node_id) WHERE closed_at IS NULL;

CREATE TABLE encode_jobs (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  property_id TEXT NOT NULL,
  idempotency_key TEXT NOT NULL,
  vendor TEXT NOT NULL,
  credential_id TEXT NOT NULL,
  door_indexes TEXT NOT NULL DEFAULT '[]',
  valid_from INTEGER NOT NULL,
  valid_until INTEGER NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('dispatched','encoded','failed','cancelled','replaced')),
  holders TEXT NOT NULL DEFAULT '[]',
  dispatches INTEGER NOT NULL DEFAULT 0,
  desktop_device_id TEXT,
  encoder_id TEXT,
  session_id TEXT,
  card_number_ciphertext BLOB,
  card_number_kms_version TEXT,
  failure TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  encoded_at INTEGER,
  cancelled_at INTEGER,
  UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX ix_encode_jobs_credential ON encode_jobs (tenant_id, credential_id);
CREATE INDEX ix_encode_jobs_live ON encode_jobs (tenant_id, property_id, vendor) WHERE state = 'encoded';

CREATE TABLE provisional_credentials (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  certificate_id TEXT NOT NULL,
  provisional_id TEXT NOT NULL,
  property_id TEXT NOT NULL,
  desktop_device_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  reservation_id TEXT,
  room_ids TEXT NOT NULL,
  valid_from INTEGER NOT NULL,
  valid_until INTEGER NOT NULL,
  minted_at INTEGER NOT NULL,
  card_number_ciphertext BLOB,
  card_number_kms_version TEXT,
  signature TEXT NOT NULL,
  verdict TEXT NOT NULL CHECK (verdict IN ('valid','invalid','forged')),
  reason TEXT,
  credential_id TEXT,
  handoff_message_id TEXT,
  verified_at INTEGER NOT NULL,
  reissue_flagged_at INTEGER,
  reissue_message_id TEXT,
  UNIQUE (tenant_id, certificate_id, provisional_id)
);
CREATE INDEX ix_provisional_reissue ON provisional_credentials (tenant_id, certificate_id) WHERE reissue_flagged_at IS NULL;

ALTER TABLE offline_issuance ADD COLUMN issuer_signature TEXT;
ALTER TABLE offline_issuance ADD COLUMN issuer_key_id TEXT;
