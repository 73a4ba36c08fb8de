-- The stock version (`inventory.stock_changed.v1`'s `version`) each SKU's
-- availability was taken from: an event older than it changes nothing,
-- whatever order the broker delivers in. NULL: taken from an event
-- published before events carried versions (any versioned one is newer).
ALTER TABLE sku_availability ADD COLUMN stock_version bigint;
