DROP TRIGGER product_terms_deleted ON products;
DROP TRIGGER product_terms_updated ON products;
DROP TRIGGER product_terms_inserted ON products;
DROP FUNCTION product_terms_deleted();
DROP FUNCTION product_terms_updated();
DROP FUNCTION product_terms_inserted();
DROP FUNCTION product_terms_of(tsvector, uuid);
DROP TABLE product_terms;
