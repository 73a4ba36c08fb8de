DROP TRIGGER product_changed ON products;
DROP FUNCTION product_changed();
