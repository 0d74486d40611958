-- 0019: what the hot-path plan test (persistence tests/it/plans.rs, issue 11) found
-- reading a growing table sequentially on a loaded database.
-- An operator command's outcome by its message id (`message_outcome`, polled every 20 ms
-- while an operator command waits for its step) read every mailbox entry of every tenant.
CREATE INDEX ix_mailbox_message ON mailbox (tenant_id, message_id) WHERE message_id IS NOT NULL;
