ALTER TABLE sku_availability DROP COLUMN stock_version;
