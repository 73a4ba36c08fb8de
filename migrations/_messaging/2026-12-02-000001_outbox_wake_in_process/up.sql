-- The relay is woken in process by the writer after its commit
-- (events::outbox::wake), not
-- by a NOTIFY in the writer's transaction: PostgreSQL serializes the commits
-- of all transactions that NOTIFY (one lock per database, held through the
-- WAL flush), so every event-publishing commit queued behind the others,
-- row locks held (see docs/BENCHMARKS.md, ADR 0015). `NOTIFY
-- shop_outbox_<schema>` by hand still wakes the relays.
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS outbox_notify();
