-- Lockstep schema, Postgres (spec 004 §3, with the deviations listed in ARCHITECTURE.md).
-- Runs as the owner role. The service runs as lockstep_app (no BYPASSRLS); the few
-- cross-tenant workers (outbox publisher, partition scanner) as lockstep_worker (DESIGN §5).

CREATE TABLE key_credentials (
  id text PRIMARY KEY,
  tenant_id uuid NOT NULL,
  property_id text NOT NULL,
  holder_kind text NOT NULL CHECK (holder_kind IN ('guest','staff_master')),
  reservation_id text,
  guest_id text,
  staff_user_id text,
  kind text NOT NULL CHECK (kind IN ('mobile_app','pin_code','rfid_card','qr_code','nfc_tag')),
  scope jsonb NOT NULL DEFAULT '{}'::jsonb,
  valid_from timestamptz NOT NULL,
  valid_until timestamptz NOT NULL,
  state text NOT NULL CHECK (state IN ('requested','pending','active','suspended','revoked','failed')),
  vendor text NOT NULL CHECK (vendor IN ('ttlock','salto','assa-abloy','generic-wiegand','kisi','brivo')),
  vendor_adapter_id text NOT NULL,
  provisional boolean NOT NULL DEFAULT false,
  idempotency_key text NOT NULL,
  issued_at timestamptz,
  suspended_at timestamptz,
  revoked_at timestamptz,
  failure_reason text,
  suspend_reason text,
  revoke_reason text,
  replaces_id text,
  replaced_by_id text,
  version bigint NOT NULL DEFAULT 1,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  CONSTRAINT ux_key_credentials_tenant_id UNIQUE (tenant_id, id),
  CONSTRAINT fk_key_credentials_replaces FOREIGN KEY (tenant_id, replaces_id) REFERENCES key_credentials (tenant_id, id),
  CONSTRAINT fk_key_credentials_replaced_by FOREIGN KEY (tenant_id, replaced_by_id) REFERENCES key_credentials (tenant_id, id),
  CONSTRAINT chk_valid_window CHECK (valid_from < valid_until),
  CONSTRAINT chk_holder_guest CHECK (
    (holder_kind = 'guest' AND reservation_id IS NOT NULL AND guest_id IS NOT NULL AND staff_user_id IS NULL)
    OR (holder_kind = 'staff_master' AND staff_user_id IS NOT NULL AND reservation_id IS NULL)
  ),
  CONSTRAINT chk_provisional_window CHECK (NOT provisional OR (valid_until <= valid_from + INTERVAL '48 hours'))
);
CREATE INDEX ix_key_credentials_tenant_id_state ON key_credentials (tenant_id, state);
CREATE INDEX ix_key_credentials_reservation_id ON key_credentials (tenant_id, reservation_id) WHERE reservation_id IS NOT NULL;
CREATE INDEX ix_key_credentials_property_state ON key_credentials (tenant_id, property_id, state);
CREATE UNIQUE INDEX ux_key_credentials_idem ON key_credentials (tenant_id, idempotency_key);

CREATE TABLE key_credential_rooms (
  tenant_id uuid NOT NULL,
  key_credential_id text NOT NULL,
  room_id text NOT NULL,
  PRIMARY KEY (key_credential_id, room_id),
  FOREIGN KEY (tenant_id, key_credential_id) REFERENCES key_credentials (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX ix_kc_rooms_tenant_room ON key_credential_rooms (tenant_id, room_id);

CREATE TABLE vendor_adapters (
  id text PRIMARY KEY,
  tenant_id uuid NOT NULL,
  property_id text NOT NULL,
  vendor text NOT NULL CHECK (vendor IN ('ttlock','salto','assa-abloy','generic-wiegand','kisi','brivo')),
  environment text NOT NULL CHECK (environment IN ('sandbox','production')),
  capabilities jsonb NOT NULL,
  enabled boolean NOT NULL DEFAULT true,
  precedence integer NOT NULL DEFAULT 100,
  health jsonb NOT NULL DEFAULT '{}'::jsonb,
  config_ciphertext bytea NOT NULL,
  config_kms_version text NOT NULL,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  CONSTRAINT ux_vendor_adapters_tenant_id UNIQUE (tenant_id, id),
  CONSTRAINT ux_vendor_adapters UNIQUE (tenant_id, property_id, vendor, environment)
);

CREATE TABLE lock_devices (
  id text PRIMARY KEY,
  tenant_id uuid NOT NULL,
  property_id text NOT NULL,
  vendor text NOT NULL,
  vendor_adapter_id text NOT NULL,
  vendor_device_ref_ciphertext bytea NOT NULL,
  vendor_device_ref_kms_version text NOT NULL,
  label text NOT NULL,
  capabilities jsonb NOT NULL,
  online boolean NOT NULL DEFAULT true,
  registered_at timestamptz NOT NULL,
  decommissioned_at timestamptz,
  CONSTRAINT ux_lock_devices_tenant_id UNIQUE (tenant_id, id),
  FOREIGN KEY (tenant_id, vendor_adapter_id) REFERENCES vendor_adapters (tenant_id, id)
);
CREATE INDEX ix_lock_devices_property ON lock_devices (tenant_id, property_id) WHERE decommissioned_at IS NULL;

CREATE TABLE lock_device_rooms (
  tenant_id uuid NOT NULL,
  device_id text NOT NULL,
  room_id text NOT NULL,
  PRIMARY KEY (device_id, room_id),
  FOREIGN KEY (tenant_id, device_id) REFERENCES lock_devices (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX ix_ldr_room ON lock_device_rooms (tenant_id, room_id);

-- Door truth and vendor-operation intent, one row per (credential, device) (DESIGN §3.4,
-- §3.5, §6). The PIN is committed here, encrypted, before the vendor call.
CREATE TABLE key_credential_devices (
  tenant_id uuid NOT NULL,
  key_credential_id text NOT NULL,
  device_id text NOT NULL,
  desired text NOT NULL CHECK (desired IN ('present','absent')),
  sync text NOT NULL CHECK (sync IN ('pending','confirmed','failed')),
  pin_ciphertext bytea,
  pin_kms_version text,
  vendor_ref_ciphertext bytea,
  vendor_ref_kms_version text,
  attempts integer NOT NULL DEFAULT 0,
  pin_collisions integer NOT NULL DEFAULT 0,
  last_error text,
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (key_credential_id, device_id),
  FOREIGN KEY (tenant_id, key_credential_id) REFERENCES key_credentials (tenant_id, id) ON DELETE CASCADE,
  FOREIGN KEY (tenant_id, device_id) REFERENCES lock_devices (tenant_id, id)
);
CREATE INDEX ix_kcd_unconfirmed ON key_credential_devices (tenant_id, desired) WHERE sync <> 'confirmed';

CREATE TABLE outbox (
  id text PRIMARY KEY,
  tenant_id uuid NOT NULL,
  aggregate_id text NOT NULL,
  topic text NOT NULL,
  payload jsonb NOT NULL,
  envelope jsonb NOT NULL,
  created_at timestamptz NOT NULL,
  published_at timestamptz,
  publish_attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL,
  last_error text
);
CREATE INDEX ix_outbox_unpublished ON outbox (next_attempt_at) WHERE published_at IS NULL;

CREATE TABLE inbox (
  message_id text NOT NULL,
  consumer_name text NOT NULL,
  tenant_id uuid NOT NULL,
  topic text NOT NULL,
  processed_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, message_id, consumer_name)
);

-- Persistent mailbox and durable timers (DESIGN §3): consumed events and the commands the
-- saga derives from them, handled per subject in id order once due.
CREATE TABLE mailbox (
  id bigserial PRIMARY KEY,
  tenant_id uuid NOT NULL,
  property_id text NOT NULL,
  partition integer NOT NULL,
  subject text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('event','drive')),
  message_id text,
  topic text,
  credential_id text,
  payload jsonb NOT NULL DEFAULT '{}'::jsonb,
  due_at timestamptz NOT NULL,
  attempts integer NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL,
  done_at timestamptz,
  outcome text,
  last_error text
);
CREATE INDEX ix_mailbox_subject_open ON mailbox (tenant_id, subject, id) WHERE done_at IS NULL;
CREATE INDEX ix_mailbox_partition_due ON mailbox (partition, due_at) WHERE done_at IS NULL;
CREATE UNIQUE INDEX ux_mailbox_open_drive ON mailbox (tenant_id, credential_id) WHERE done_at IS NULL AND kind = 'drive';

-- Saga state keyed by its subject (reservation, shift, booking), DESIGN §12.
CREATE TABLE key_credential_saga (
  tenant_id uuid NOT NULL,
  subject text NOT NULL,
  state jsonb NOT NULL,
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, subject)
);

-- Partition ownership fencing (DESIGN §4); not tenant data.
CREATE TABLE partition_epochs (
  partition integer PRIMARY KEY,
  epoch bigint NOT NULL,
  owner text NOT NULL,
  taken_at timestamptz NOT NULL
);

CREATE TABLE lock_audit (
  id text PRIMARY KEY,
  tenant_id uuid NOT NULL,
  property_id text NOT NULL,
  key_credential_id text,
  master_key_id text,
  device_id text,
  actor_user_id text,
  actor_kind text NOT NULL,
  action text NOT NULL,
  reason text,
  vendor text,
  trace_id text,
  created_at timestamptz NOT NULL,
  payload jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX ix_lock_audit_tenant_time ON lock_audit (tenant_id, created_at DESC);
CREATE INDEX ix_lock_audit_credential ON lock_audit (key_credential_id, created_at DESC) WHERE key_credential_id IS NOT NULL;

-- Row-level security: ENABLE and FORCE on every tenant table (DESIGN §5).
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['key_credentials','key_credential_rooms','vendor_adapters','lock_devices',
      'lock_device_rooms','key_credential_devices','outbox','inbox','mailbox','key_credential_saga','lock_audit']
  LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY %I ON %I USING (tenant_id::text = current_setting(''app.tenant_id'', true)) WITH CHECK (tenant_id::text = current_setting(''app.tenant_id'', true))', t || '_tenant_isolation', t);
  END LOOP;
END $$;

-- Grants: the service role reads and writes tenant rows (under RLS); the audit is
-- append-only for it; the worker role gets only what the cross-tenant workers need.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lockstep_app') THEN
    GRANT SELECT, INSERT, UPDATE ON key_credentials, key_credential_rooms, vendor_adapters, lock_devices,
      lock_device_rooms, key_credential_devices, outbox, mailbox, key_credential_saga TO lockstep_app;
    GRANT DELETE ON key_credential_rooms, lock_device_rooms TO lockstep_app;
    GRANT SELECT, INSERT ON inbox, lock_audit TO lockstep_app;
    GRANT SELECT, UPDATE ON partition_epochs TO lockstep_app;
    GRANT USAGE ON SEQUENCE mailbox_id_seq TO lockstep_app;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lockstep_worker') THEN
    GRANT SELECT, UPDATE ON outbox TO lockstep_worker;
    GRANT SELECT ON mailbox TO lockstep_worker;
    GRANT SELECT, INSERT, UPDATE ON partition_epochs TO lockstep_worker;
  END IF;
END $$;
