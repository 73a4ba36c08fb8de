-- The availability of every SKU the inventory has announced, sold here or
-- not (yet). Stock received before its product is created used to be
-- dropped (no product row to update), and the product then started
-- `unknown`, hidden from in-stock listings until its next stock movement.
-- Kept by the availability handler (`repo::set_availabilities`); a new
-- product starts from it (the trigger below), whoever inserts it.
CREATE TABLE sku_availability (
    sku          text        PRIMARY KEY,
    availability text        NOT NULL
        CHECK (availability IN ('unknown', 'in_stock', 'low_stock', 'out_of_stock')),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

INSERT INTO sku_availability (sku, availability)
SELECT sku, availability FROM products WHERE availability <> 'unknown';

CREATE FUNCTION product_availability_known() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
AS $$
BEGIN
    IF NEW.availability = 'unknown' THEN
        NEW.availability := COALESCE(
            (SELECT availability FROM sku_availability WHERE sku = NEW.sku), 'unknown');
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER product_availability_known BEFORE INSERT ON products
    FOR EACH ROW EXECUTE FUNCTION product_availability_known();
