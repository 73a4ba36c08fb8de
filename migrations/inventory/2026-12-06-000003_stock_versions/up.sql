-- Every movement of a SKU takes its row's `version` one up, and the
-- `inventory.stock_changed.v1` event carries it: events can reach a
-- consumer out of order (several consumers of one broker queue, a
-- requeued or redriven message), and a read model keeps only what is
-- newer than what it holds. A constant default: no table rewrite.
ALTER TABLE stock ADD COLUMN version bigint NOT NULL DEFAULT 0 CHECK (version >= 0);
