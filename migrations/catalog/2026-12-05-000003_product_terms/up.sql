-- Each word's products ranked in advance, for one-word searches in
-- relevance order (ADR 0021). A search for a common word ("mug" in 10,000
-- of 100,000 products) must rank every match to find the best twenty: the
-- GIN index finds them, but their rows must all be read and ranked. Here
-- a word's products are already in rank order, so a page is an index range
-- scan of twenty entries. Searches of several words, or with operators,
-- still rank every match (products_search_idx).
--
-- Kept by the triggers below from `products.search`, so every writer (the
-- module, a bulk load, SQL by hand) keeps it true in the same transaction.
CREATE TABLE product_terms (
    -- The word, as the text of a one-word tsquery (`'mug'`): what
    -- `websearch_to_tsquery(...)::text` is for a search of that word.
    term       text COLLATE "C" NOT NULL,
    -- ts_rank(products.search, term::tsquery): the search's own ranking.
    rank       real             NOT NULL,
    product_id uuid             NOT NULL,
    PRIMARY KEY (term, rank, product_id)
);

-- The entries of one product: each word of its search vector, ranked.
CREATE FUNCTION product_terms_of(words tsvector, product uuid)
    RETURNS TABLE (term text, rank real, product_id uuid)
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path FROM CURRENT
AS $$
    SELECT query::text, ts_rank(words, query), product
    FROM unnest(words) AS word,
         -- A quoted lexeme is read as is: a backslash escapes, a quote is doubled.
         LATERAL (SELECT ('''' || replace(replace(word.lexeme, '\', '\\'), '''', '''''') || '''')::tsquery
                  AS query) AS one
$$;

CREATE FUNCTION product_terms_inserted() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
AS $$
BEGIN
    INSERT INTO product_terms
    SELECT t.* FROM inserted AS p, product_terms_of(p.search, p.id) AS t;
    RETURN NULL;
END
$$;

CREATE FUNCTION product_terms_updated() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM product_terms
    WHERE (term, rank, product_id) IN (SELECT * FROM product_terms_of(OLD.search, OLD.id));
    INSERT INTO product_terms SELECT * FROM product_terms_of(NEW.search, NEW.id);
    RETURN NULL;
END
$$;

CREATE FUNCTION product_terms_deleted() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM product_terms
    WHERE (term, rank, product_id) IN
          (SELECT t.* FROM deleted AS p, product_terms_of(p.search, p.id) AS t);
    RETURN NULL;
END
$$;

-- Inserts and deletes once per statement (a bulk load is one INSERT ...
-- SELECT); updates per row, and only when the words changed: the frequent
-- updates (availability, price, active) never reach the function.
CREATE TRIGGER product_terms_inserted AFTER INSERT ON products
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION product_terms_inserted();
CREATE TRIGGER product_terms_updated AFTER UPDATE ON products
    FOR EACH ROW WHEN (OLD.search IS DISTINCT FROM NEW.search)
    EXECUTE FUNCTION product_terms_updated();
CREATE TRIGGER product_terms_deleted AFTER DELETE ON products
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION product_terms_deleted();

INSERT INTO product_terms SELECT t.* FROM products AS p, product_terms_of(p.search, p.id) AS t;
