-- A product created while the first stock event of its SKU was being
-- handled kept `unknown` (hidden from in-stock listings until the SKU's
-- next movement): the trigger read no level yet, and the handler's UPDATE
-- of the products, in a snapshot from before the product's commit, did
-- not see it. The trigger now takes the SKU's level row for itself (made
-- `unknown` if the inventory never announced it) and reads it FOR SHARE:
-- a handler changing that level waits for the product's commit, and then
-- sees the product; a product created while a handler holds the row waits
-- for it, and then reads the level it wrote.
CREATE OR REPLACE FUNCTION product_availability_known() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
AS $$
BEGIN
    IF NEW.availability = 'unknown' THEN
        INSERT INTO sku_availability (sku, availability) VALUES (NEW.sku, 'unknown')
            ON CONFLICT (sku) DO NOTHING;
        NEW.availability := COALESCE(
            (SELECT availability FROM sku_availability WHERE sku = NEW.sku FOR SHARE),
            'unknown');
    END IF;
    RETURN NEW;
END
$$;
