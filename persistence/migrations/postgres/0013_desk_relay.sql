-- Issue 12, the desk path: encoder sessions (spec 004 §3 encoder_sessions, one row per
-- desktop session and encoder), the durable encode jobs of the desk encoders (one card per
-- idempotency key, across a desktop dying mid-job and a Lockstep restart), the provisional
-- credentials desktops minted offline with the reconciler's verdict (spec 003 §5, I-7,
-- O-2), and Lockstep's stored signature of each offline-issuance certificate.

-- spec 004 §3 plus: the relay connection it came over, the encoder's name on the desktop,
-- the certificate it authenticated with, the node that served it (a restarted node closes
-- its own leftovers) and the relay's own close reason.
CREATE TABLE encoder_sessions (
  id text PRIMARY KEY,
  tenant_id uuid NOT NULL,
  property_id text NOT NULL,
  desktop_device_id text NOT NULL,
  encoder_model text NOT NULL,
  transport text NOT NULL CHECK (transport IN ('usb_hid','serial')),
  opened_at timestamptz NOT NULL DEFAULT now(),
  closed_at timestamptz,
  close_reason text CHECK (close_reason IN ('graceful','usb_disconnect','app_quit','error')),
  connection_id text NOT NULL,
  encoder_id text NOT NULL,
  certificate_id text NOT NULL,
  node_id text NOT NULL,
  close_detail text,
  CONSTRAINT ck_encoder_sessions_closed CHECK ((closed_at IS NULL) = (close_reason IS NULL))
);
CREATE INDEX ix_encoder_sessions_open ON encoder_sessions (tenant_id, property_id) WHERE closed_at IS NULL;
CREATE INDEX ix_encoder_sessions_node_open ON encoder_sessions (node_id) WHERE closed_at IS NULL;

-- One card per idempotency key: `holders` are the desktops the job was sent to (written
-- before the send), the card number the reader read is encrypted and bound to the row.
CREATE TABLE encode_jobs (
  id text PRIMARY KEY,
  tenant_id uuid NOT NULL,
  property_id text NOT NULL,
  idempotency_key text NOT NULL,
  vendor text NOT NULL,
  credential_id text NOT NULL,
  door_indexes jsonb NOT NULL DEFAULT '[]'::jsonb,
  valid_from timestamptz NOT NULL,
  valid_until timestamptz NOT NULL,
  state text NOT NULL CHECK (state IN ('dispatched','encoded','failed','cancelled','replaced')),
  holders jsonb NOT NULL DEFAULT '[]'::jsonb,
  dispatches integer NOT NULL DEFAULT 0,
  desktop_device_id text,
  encoder_id text,
  session_id text,
  card_number_ciphertext bytea,
  card_number_kms_version text,
  failure text,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  encoded_at timestamptz,
  cancelled_at timestamptz,
  CONSTRAINT ux_encode_jobs_key UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX ix_encode_jobs_credential ON encode_jobs (tenant_id, credential_id);
CREATE INDEX ix_encode_jobs_live ON encode_jobs (tenant_id, property_id, vendor) WHERE state = 'encoded';

-- What the reconciler made of each provisional credential a desktop sent (verdicts are
-- final: a batch sent again is answered the same).
CREATE TABLE provisional_credentials (
  id text PRIMARY KEY,
  tenant_id uuid NOT NULL,
  certificate_id text NOT NULL,
  provisional_id text NOT NULL,
  property_id text NOT NULL,
  desktop_device_id text NOT NULL,
  kind text NOT NULL,
  reservation_id text,
  room_ids jsonb NOT NULL,
  valid_from timestamptz NOT NULL,
  valid_until timestamptz NOT NULL,
  minted_at timestamptz NOT NULL,
  card_number_ciphertext bytea,
  card_number_kms_version text,
  signature text NOT NULL,
  verdict text NOT NULL CHECK (verdict IN ('valid','invalid','forged')),
  reason text,
  credential_id text,
  handoff_message_id text,
  verified_at timestamptz NOT NULL,
  reissue_flagged_at timestamptz,
  reissue_message_id text,
  CONSTRAINT ux_provisional_credentials UNIQUE (tenant_id, certificate_id, provisional_id)
);
CREATE INDEX ix_provisional_reissue ON provisional_credentials (tenant_id, certificate_id) WHERE reissue_flagged_at IS NULL;

-- Lockstep's Ed25519 signature over the certificate's canonical text, kept when it is
-- issued: a row written behind Lockstep's back has none, and the relay refuses it.
ALTER TABLE offline_issuance ADD COLUMN issuer_signature text;
ALTER TABLE offline_issuance ADD COLUMN issuer_key_id text;

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['encoder_sessions','encode_jobs','provisional_credentials']
  LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY %I ON %I USING (tenant_id::text = current_setting(''app.tenant_id'', true)) WITH CHECK (tenant_id::text = current_setting(''app.tenant_id'', true))', t || '_tenant_isolation', t);
  END LOOP;
END $$;

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lockstep_app') THEN
    GRANT SELECT, INSERT, UPDATE ON encoder_sessions, encode_jobs, provisional_credentials TO lockstep_app;
  END IF;
  -- a restarted node closes the sessions it left open, whatever their tenant
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lockstep_worker') THEN
    GRANT SELECT ON encoder_sessions TO lockstep_worker;
  END IF;
END $$;
