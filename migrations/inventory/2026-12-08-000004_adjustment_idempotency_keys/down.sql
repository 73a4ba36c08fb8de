DROP INDEX movements_idempotency_key_idx;
ALTER TABLE movements DROP COLUMN idempotency_key;
