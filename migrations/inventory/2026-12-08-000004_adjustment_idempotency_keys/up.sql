-- An adjustment may carry its caller's `Idempotency-Key` (a warehouse tool
-- whose answer was lost, or that got a gateway's 502 "may have been
-- applied", sends it again): the key is kept with the movement it made,
-- and one key makes at most one movement of a SKU, whatever the number of
-- requests or instances (`service::adjust_keyed` answers the others as
-- replays). Nullable, no default: no table rewrite; every movement before
-- and every other kind has none, which the partial index leaves out. The
-- index starts empty, but building it reads the whole of `movements`, and
-- new movements (every stock move) wait for it: a second or so per few
-- million rows. Built in the migration's transaction all the same (not
-- CONCURRENTLY): a concurrent build that fails leaves an invalid index
-- behind, which would stop every later start until removed by hand.
ALTER TABLE movements ADD COLUMN idempotency_key text;
CREATE UNIQUE INDEX movements_idempotency_key_idx ON movements (sku, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
