-- Every instance's product cache follows changes made by any writer: a
-- changed or deleted product is announced on `shop_catalog_products` with
-- its id, in the writer's transaction (PostgreSQL delivers it when that
-- commits, once per product and transaction), and each instance forgets
-- its copy (`catalog::changes`). The catalog's own events cannot do this
-- when it runs several instances: on RabbitMQ one instance of a module
-- receives each event, and its inbox would skip it for the others.
CREATE FUNCTION product_changed() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM pg_notify('shop_catalog_products', OLD.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER product_changed AFTER UPDATE OR DELETE ON products
    FOR EACH ROW EXECUTE FUNCTION product_changed();
