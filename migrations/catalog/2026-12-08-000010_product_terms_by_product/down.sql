CREATE OR REPLACE FUNCTION product_terms_deleted() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM product_terms
    WHERE (term, rank, product_id) IN
          (SELECT t.* FROM deleted AS p, product_terms_of(p.search, p.id) AS t);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION product_terms_updated() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM product_terms
    WHERE (term, rank, product_id) IN (SELECT * FROM product_terms_of(OLD.search, OLD.id));
    INSERT INTO product_terms SELECT * FROM product_terms_of(NEW.search, NEW.id);
    RETURN NULL;
END
$$;

DROP INDEX product_terms_product_idx;
