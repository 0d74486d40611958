-- 0020: a room link keeps whether its credential is live, not its state (issue 11; see the
-- Postgres migration): links are rewritten only when what I-9 reads changes.
DROP TRIGGER trg_kcr_no_overlap_insert;
DROP TRIGGER trg_kcr_no_overlap_update;
ALTER TABLE key_credential_rooms ADD COLUMN live INTEGER NOT NULL DEFAULT 0 CHECK (live IN (0, 1));
UPDATE key_credential_rooms SET live = CASE WHEN state IN ('requested','pending','active','suspended') THEN 1 ELSE 0 END;
ALTER TABLE key_credential_rooms DROP COLUMN state;

-- Half-open windows [valid_from, valid_until), live guest credentials only, as before.
CREATE TRIGGER trg_kcr_no_overlap_insert BEFORE INSERT ON key_credential_rooms
WHEN NEW.is_master = 0 AND NEW.live = 1
BEGIN
  SELECT RAISE(ABORT, 'I-9: overlapping credential of another reservation on the same room')
  WHERE EXISTS (
    SELECT 1 FROM key_credential_rooms o
     WHERE o.tenant_id = NEW.tenant_id AND o.property_id = NEW.property_id AND o.room_id = NEW.room_id
       AND o.is_master = 0 AND o.live = 1
       AND o.reservation_id <> NEW.reservation_id
       AND o.valid_from < NEW.valid_until AND NEW.valid_from < o.valid_until
  );
END;
CREATE TRIGGER trg_kcr_no_overlap_update BEFORE UPDATE ON key_credential_rooms
WHEN NEW.is_master = 0 AND NEW.live = 1
BEGIN
  SELECT RAISE(ABORT, 'I-9: overlapping credential of another reservation on the same room')
  WHERE EXISTS (
    SELECT 1 FROM key_credential_rooms o
     WHERE o.tenant_id = NEW.tenant_id AND o.property_id = NEW.property_id AND o.room_id = NEW.room_id
       AND NOT (o.key_credential_id = OLD.key_credential_id AND o.room_id = OLD.room_id)
       AND o.is_master = 0 AND o.live = 1
       AND o.reservation_id <> NEW.reservation_id
       AND o.valid_from < NEW.valid_until AND NEW.valid_from < o.valid_until
  );
END;
