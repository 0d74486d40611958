-- The worker role may bring parked drives forward when a vendor's breaker closes
-- (DESIGN §7: the backlog drains with revocations first). Only the due time.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lockstep_worker') THEN
    GRANT UPDATE (due_at) ON mailbox TO lockstep_worker;
    GRANT SELECT ON key_credentials TO lockstep_worker;
  END IF;
END $$;
