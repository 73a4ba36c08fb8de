DROP INDEX products_newest_idx;
DROP INDEX products_name_idx;
DROP INDEX products_price_idx;
DROP INDEX products_category_idx;
DROP INDEX products_search_idx;
ALTER TABLE products DROP COLUMN search, DROP COLUMN availability, DROP COLUMN attributes,
    DROP COLUMN images, DROP COLUMN category_id;
DROP TABLE categories;
