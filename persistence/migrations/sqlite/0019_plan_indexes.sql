-- 0019: the index Postgres's hot-path plan test (persistence tests/it/plans.rs, issue 11)
-- found missing, kept alike here: an operator command's outcome by its message id.
CREATE INDEX ix_mailbox_message ON mailbox (tenant_id, message_id) WHERE message_id IS NOT NULL;
