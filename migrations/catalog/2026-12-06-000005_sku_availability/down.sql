DROP TRIGGER product_availability_known ON products;
DROP FUNCTION product_availability_known();
DROP TABLE sku_availability;
