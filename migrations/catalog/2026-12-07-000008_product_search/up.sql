-- Each product's search vector alone, for searches that rank every match
-- in relevance order with no filter (several words, operators: ADR 0021,
-- ADR 0023). Such a search reads every match's vector to rank it; in
-- `products` the vectors are spread over every page of the table (a
-- product row is some 250 bytes), here over half as many (`q=blue teapot`,
-- 2,500 matches in 100k products: 4.6 -> 3.0-3.3 ms by pgbench). Searches
-- with a filter or another order still read `products` (its columns decide).
--
-- Kept by the triggers below from `products.search`, in the writer's
-- transaction, as `product_terms` is: every writer keeps it true. The
-- triggers come before the copy: creating them locks out writers until
-- this migration commits, so no write falls between the copy and them
-- (an older instance writing during a rolling upgrade waits for the copy
-- and the index instead).
CREATE TABLE product_search (
    id     uuid     PRIMARY KEY,
    search tsvector NOT NULL
);

CREATE FUNCTION product_search_inserted() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
AS $$
BEGIN
    INSERT INTO product_search SELECT id, search FROM inserted;
    RETURN NULL;
END
$$;

CREATE FUNCTION product_search_updated() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
AS $$
BEGIN
    -- An upsert: a row that is missing (whatever the cause) comes back.
    DELETE FROM product_search WHERE id = OLD.id AND OLD.id <> NEW.id;
    INSERT INTO product_search VALUES (NEW.id, NEW.search)
    ON CONFLICT (id) DO UPDATE SET search = EXCLUDED.search;
    RETURN NULL;
END
$$;

CREATE FUNCTION product_search_deleted() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM product_search WHERE id IN (SELECT id FROM deleted);
    RETURN NULL;
END
$$;

-- Inserts and deletes once per statement; updates per row, and only when
-- the words (or the id) changed: availability, price and active never
-- reach the function.
CREATE TRIGGER product_search_inserted AFTER INSERT ON products
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION product_search_inserted();
CREATE TRIGGER product_search_updated AFTER UPDATE ON products
    FOR EACH ROW WHEN (OLD.search IS DISTINCT FROM NEW.search OR OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION product_search_updated();
CREATE TRIGGER product_search_deleted AFTER DELETE ON products
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION product_search_deleted();

INSERT INTO product_search SELECT id, search FROM products;

CREATE INDEX product_search_idx ON product_search USING gin (search);

ANALYZE product_search;
