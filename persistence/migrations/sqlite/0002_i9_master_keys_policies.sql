-- 0002: I-9 enforced by the schema (DESIGN §12), master keys and key-kind policies
-- (spec 004 §3, spec 003 M-1, M-2, K-1, K-2). Timestamps are integer Unix milliseconds.

-- ----- I-9 -----
-- The room link carries a copy of what the rule needs; `Store::commit` rewrites the copies
-- with every write of the credential. SQLite cannot add NOT NULL columns without a
-- default, so the table is rebuilt (nothing references it) and backfilled.
CREATE TABLE key_credential_rooms_v2 (
  tenant_id TEXT NOT NULL,
  key_credential_id TEXT NOT NULL,
  room_id TEXT NOT NULL,
  property_id TEXT NOT NULL,
  reservation_id TEXT,
  is_master INTEGER NOT NULL CHECK (is_master IN (0, 1)),
  state TEXT NOT NULL CHECK (state IN ('requested','pending','active','suspended','revoked','failed')),
  valid_from INTEGER NOT NULL,
  valid_until INTEGER NOT NULL,
  PRIMARY KEY (key_credential_id, room_id),
  FOREIGN KEY (tenant_id, key_credential_id) REFERENCES key_credentials (tenant_id, id) ON DELETE CASCADE,
  CHECK (valid_from < valid_until),
  CHECK (is_master = 1 OR reservation_id IS NOT NULL)
);
INSERT INTO key_credential_rooms_v2 (tenant_id, key_credential_id, room_id, property_id, reservation_id, is_master, state, valid_from, valid_until)
SELECT r.tenant_id, r.key_credential_id, r.room_id, c.property_id, c.reservation_id,
       CASE WHEN c.holder_kind = 'staff_master' THEN 1 ELSE 0 END, c.state, c.valid_from, c.valid_until
  FROM key_credential_rooms r
  JOIN key_credentials c ON c.tenant_id = r.tenant_id AND c.id = r.key_credential_id;
DROP TABLE key_credential_rooms;
ALTER TABLE key_credential_rooms_v2 RENAME TO key_credential_rooms;
CREATE INDEX ix_kc_rooms_tenant_room ON key_credential_rooms (tenant_id, property_id, room_id, valid_from);

-- Half-open windows [valid_from, valid_until): a stay ending when the next begins does not
-- overlap it. Live states only; master keys and other credentials of the same
-- reservation are allowed. The write transaction (`BEGIN IMMEDIATE`, one writer per file)
-- makes check and write atomic, across processes too.
CREATE TRIGGER trg_kcr_no_overlap_insert BEFORE INSERT ON key_credential_rooms
WHEN NEW.is_master = 0 AND NEW.state IN ('requested','pending','active','suspended')
BEGIN
  SELECT RAISE(ABORT, 'I-9: overlapping credential of another reservation on the same room')
  WHERE EXISTS (
    SELECT 1 FROM key_credential_rooms o
     WHERE o.tenant_id = NEW.tenant_id AND o.property_id = NEW.property_id AND o.room_id = NEW.room_id
       AND o.is_master = 0 AND o.state IN ('requested','pending','active','suspended')
       AND o.reservation_id <> NEW.reservation_id
       AND o.valid_from < NEW.valid_until AND NEW.valid_from < o.valid_until
  );
END;
CREATE TRIGGER trg_kcr_no_overlap_update BEFORE UPDATE ON key_credential_rooms
WHEN NEW.is_master = 0 AND NEW.state IN ('requested','pending','active','suspended')
BEGIN
  SELECT RAISE(ABORT, 'I-9: overlapping credential of another reservation on the same room')
  WHERE EXISTS (
    SELECT 1 FROM key_credential_rooms o
     WHERE o.tenant_id = NEW.tenant_id AND o.property_id = NEW.property_id AND o.room_id = NEW.room_id
       AND NOT (o.key_credential_id = OLD.key_credential_id AND o.room_id = OLD.room_id)
       AND o.is_master = 0 AND o.state IN ('requested','pending','active','suspended')
       AND o.reservation_id <> NEW.reservation_id
       AND o.valid_from < NEW.valid_until AND NEW.valid_from < o.valid_until
  );
END;

-- ----- master_keys -----
-- M-1 by foreign key: the credential is a staff master credential of the same tenant.
CREATE UNIQUE INDEX ux_key_credentials_tenant_id_holder ON key_credentials (tenant_id, id, holder_kind);

CREATE TABLE master_keys (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  property_id TEXT NOT NULL,
  staff_user_id TEXT NOT NULL,
  shift_id TEXT,
  key_credential_id TEXT NOT NULL,
  holder_kind TEXT NOT NULL DEFAULT 'staff_master' CHECK (holder_kind = 'staff_master'),
  scope_kind TEXT NOT NULL,
  scope TEXT NOT NULL,
  valid_from INTEGER NOT NULL,
  valid_until INTEGER NOT NULL,
  issued_at INTEGER NOT NULL,
  revoked_at INTEGER,
  UNIQUE (tenant_id, id),
  UNIQUE (tenant_id, key_credential_id),
  FOREIGN KEY (tenant_id, key_credential_id, holder_kind) REFERENCES key_credentials (tenant_id, id, holder_kind),
  CHECK (valid_from < valid_until)
);
CREATE INDEX ix_master_keys_staff_active ON master_keys (tenant_id, staff_user_id) WHERE revoked_at IS NULL;
CREATE INDEX ix_master_keys_property ON master_keys (tenant_id, property_id);
-- M-2 backstop: one active master key per (staff user, property, scope kind).
CREATE UNIQUE INDEX ux_master_keys_one_active ON master_keys (tenant_id, property_id, staff_user_id, scope_kind) WHERE revoked_at IS NULL;

-- ----- key_kind_policies -----
CREATE TABLE key_kind_policies (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  property_id TEXT NOT NULL,
  preferred_order TEXT NOT NULL,
  fallback_chain TEXT NOT NULL DEFAULT '[]',
  max_valid_until_extension_hours INTEGER NOT NULL DEFAULT 168,
  id_verify_required_for TEXT NOT NULL DEFAULT '[]',
  no_show_suspend_after_hours INTEGER NOT NULL DEFAULT 2,
  allow_offline_issuance_kinds TEXT NOT NULL DEFAULT '["rfid_card","pin_code"]',
  updated_at INTEGER NOT NULL,
  UNIQUE (tenant_id, id),
  UNIQUE (tenant_id, property_id),
  -- K-1 (non-empty preferred order) and K-2 (at most 720 hours).
  CHECK (json_valid(preferred_order) AND json_type(preferred_order) = 'array' AND json_array_length(preferred_order) > 0),
  CHECK (json_valid(fallback_chain) AND json_type(fallback_chain) = 'array'),
  CHECK (json_valid(id_verify_required_for) AND json_type(id_verify_required_for) = 'array'),
  CHECK (json_valid(allow_offline_issuance_kinds) AND json_type(allow_offline_issuance_kinds) = 'array'),
  CHECK (max_valid_until_extension_hours BETWEEN 0 AND 720),
  CHECK (no_show_suspend_after_hours >= 0)
);
