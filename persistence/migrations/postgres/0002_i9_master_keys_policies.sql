-- 0002: I-9 enforced by the schema (DESIGN §12), master keys and key-kind policies
-- (spec 004 §3, spec 003 M-1, M-2, K-1, K-2), and the worker's read of door truth.
-- Runs as the owner role in one transaction.

-- ----- I-9: no two live guest credentials of different reservations on one room at once -----
-- The room link carries a copy of what the rule needs (property, reservation, master or not,
-- state, validity); `Store::commit` rewrites the copies with every write of the credential.
CREATE EXTENSION IF NOT EXISTS btree_gist;

ALTER TABLE key_credential_rooms
  ADD COLUMN property_id text,
  ADD COLUMN reservation_id text,
  ADD COLUMN is_master boolean,
  ADD COLUMN state text,
  ADD COLUMN validity tstzrange;

-- FORCE applies RLS to the owner too, so the backfill would see no rows: lift it for
-- this transaction only (DDL is transactional; ALTER TABLE holds an exclusive lock).
ALTER TABLE key_credential_rooms NO FORCE ROW LEVEL SECURITY;
ALTER TABLE key_credentials NO FORCE ROW LEVEL SECURITY;
UPDATE key_credential_rooms r
   SET property_id = c.property_id,
       reservation_id = c.reservation_id,
       is_master = (c.holder_kind = 'staff_master'),
       state = c.state,
       validity = tstzrange(c.valid_from, c.valid_until, '[)')
  FROM key_credentials c
 WHERE c.tenant_id = r.tenant_id AND c.id = r.key_credential_id;
ALTER TABLE key_credential_rooms FORCE ROW LEVEL SECURITY;
ALTER TABLE key_credentials FORCE ROW LEVEL SECURITY;

ALTER TABLE key_credential_rooms
  ALTER COLUMN property_id SET NOT NULL,
  ALTER COLUMN is_master SET NOT NULL,
  ALTER COLUMN state SET NOT NULL,
  ALTER COLUMN validity SET NOT NULL,
  ADD CONSTRAINT chk_kcr_state CHECK (state IN ('requested','pending','active','suspended','revoked','failed')),
  ADD CONSTRAINT chk_kcr_holder CHECK (is_master OR reservation_id IS NOT NULL),
  ADD CONSTRAINT chk_kcr_validity CHECK (NOT isempty(validity) AND lower_inc(validity) AND NOT upper_inc(validity));

-- Half-open windows: a stay ending when the next begins does not overlap it.
ALTER TABLE key_credential_rooms ADD CONSTRAINT ex_kcr_no_overlap EXCLUDE USING gist (
  tenant_id WITH =,
  property_id WITH =,
  room_id WITH =,
  reservation_id WITH <>,
  validity WITH &&
) WHERE (NOT is_master AND state IN ('requested','pending','active','suspended'));

-- ----- master_keys (spec 004 §3) -----
-- M-1 by foreign key: the credential is a staff master credential of the same tenant.
ALTER TABLE key_credentials ADD CONSTRAINT ux_key_credentials_tenant_id_holder UNIQUE (tenant_id, id, holder_kind);

CREATE TABLE master_keys (
  id text PRIMARY KEY,
  tenant_id uuid NOT NULL,
  property_id text NOT NULL,
  staff_user_id text NOT NULL,
  shift_id text,
  key_credential_id text NOT NULL,
  holder_kind text NOT NULL DEFAULT 'staff_master' CHECK (holder_kind = 'staff_master'),
  scope_kind text NOT NULL,
  scope jsonb NOT NULL,
  valid_from timestamptz NOT NULL,
  valid_until timestamptz NOT NULL,
  issued_at timestamptz NOT NULL,
  revoked_at timestamptz,
  CONSTRAINT ux_master_keys_tenant_id UNIQUE (tenant_id, id),
  CONSTRAINT ux_master_keys_credential UNIQUE (tenant_id, key_credential_id),
  CONSTRAINT fk_master_keys_credential FOREIGN KEY (tenant_id, key_credential_id, holder_kind)
    REFERENCES key_credentials (tenant_id, id, holder_kind),
  CONSTRAINT chk_master_keys_window CHECK (valid_from < valid_until)
);
CREATE INDEX ix_master_keys_staff_active ON master_keys (tenant_id, staff_user_id) WHERE revoked_at IS NULL;
CREATE INDEX ix_master_keys_property ON master_keys (tenant_id, property_id);
-- M-2 backstop: one active master key per (staff user, property, scope kind).
CREATE UNIQUE INDEX ux_master_keys_one_active ON master_keys (tenant_id, property_id, staff_user_id, scope_kind) WHERE revoked_at IS NULL;

-- ----- key_kind_policies (spec 004 §3) -----
CREATE TABLE key_kind_policies (
  id text PRIMARY KEY,
  tenant_id uuid NOT NULL,
  property_id text NOT NULL,
  preferred_order jsonb NOT NULL,
  fallback_chain jsonb NOT NULL DEFAULT '[]'::jsonb,
  max_valid_until_extension_hours integer NOT NULL DEFAULT 168,
  id_verify_required_for jsonb NOT NULL DEFAULT '[]'::jsonb,
  no_show_suspend_after_hours integer NOT NULL DEFAULT 2,
  allow_offline_issuance_kinds jsonb NOT NULL DEFAULT '["rfid_card","pin_code"]'::jsonb,
  updated_at timestamptz NOT NULL,
  CONSTRAINT ux_key_kind_policies_tenant_id UNIQUE (tenant_id, id),
  CONSTRAINT ux_key_kind_policies UNIQUE (tenant_id, property_id),
  -- K-1 (non-empty preferred order) and K-2 (at most 720 hours).
  CONSTRAINT chk_kkp_preferred_order CHECK (jsonb_typeof(preferred_order) = 'array' AND jsonb_array_length(preferred_order) > 0),
  CONSTRAINT chk_kkp_lists CHECK (jsonb_typeof(fallback_chain) = 'array' AND jsonb_typeof(id_verify_required_for) = 'array' AND jsonb_typeof(allow_offline_issuance_kinds) = 'array'),
  CONSTRAINT chk_kkp_extension CHECK (max_valid_until_extension_hours BETWEEN 0 AND 720),
  CONSTRAINT chk_kkp_no_show CHECK (no_show_suspend_after_hours >= 0)
);

-- Row-level security on the new tables, as 0001 does for the others (DESIGN §5).
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['master_keys','key_kind_policies']
  LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY %I ON %I USING (tenant_id::text = current_setting(''app.tenant_id'', true)) WITH CHECK (tenant_id::text = current_setting(''app.tenant_id'', true))', t || '_tenant_isolation', t);
  END LOOP;
END $$;

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lockstep_app') THEN
    GRANT SELECT, INSERT, UPDATE ON master_keys, key_kind_policies TO lockstep_app;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lockstep_worker') THEN
    -- The "revocations not yet confirmed at the door" gauge (DESIGN §3.5).
    GRANT SELECT ON key_credential_devices TO lockstep_worker;
  END IF;
END $$;
