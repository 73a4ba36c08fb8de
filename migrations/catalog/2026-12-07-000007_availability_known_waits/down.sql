CREATE OR REPLACE FUNCTION product_availability_known() RETURNS trigger
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
