-- `seq` orders the outbox: the relay reads `ORDER BY seq` through
-- outbox_undelivered_idx, and its values come from its sequence alone. The
-- unique index on it was read by nothing and written by every event's
-- insert and by every relay's mark (which sets delivered_at, a column the
-- partial index's predicate names, so a mark is never a HOT update and
-- writes an entry into every index).
ALTER TABLE outbox DROP CONSTRAINT outbox_seq_key;
