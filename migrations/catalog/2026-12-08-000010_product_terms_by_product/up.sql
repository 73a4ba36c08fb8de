-- The triggers find a product's old entries by its id, no longer by
-- recomputing them. They deleted the entries `product_terms_of` made of
-- the old vector, matched on (term, rank, product_id): a `real` rank
-- recomputed equal to the one stored years before. A PostgreSQL upgrade
-- that changes `ts_rank`'s result in its last bit, or a change of the
-- ranking (weights, normalization), and the old entries matched nothing:
-- kept for ever, a renamed product was found by a word it no longer has,
-- and by a word it kept twice. Every entry of a product is made of its one
-- vector, so all of them go when its words change, whatever their rank;
-- the index below finds them (the key leads with the term).
--
-- The index comes first: it locks out writers of the entries (their
-- triggers) until this migration commits, so none falls between the
-- clean-up below and the new triggers; searches still read the entries.
CREATE INDEX product_terms_product_idx ON product_terms (product_id);

CREATE OR REPLACE FUNCTION product_terms_updated() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM product_terms WHERE product_id = OLD.id;
    INSERT INTO product_terms SELECT * FROM product_terms_of(NEW.search, NEW.id);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION product_terms_deleted() RETURNS trigger
    LANGUAGE plpgsql SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM product_terms WHERE product_id IN (SELECT id FROM deleted);
    RETURN NULL;
END
$$;

-- Entries the old triggers may have left behind (ranks stored by an older
-- PostgreSQL, words a product lost since) go, and the products' words as
-- ranked now come in their place: what ADR 0021 said to do by hand after
-- an upgrade that changed `ts_rank`, without emptying the table under the
-- searches. The same function in the same server ranks alike, so entries
-- still right are kept as they are. Each product's words are ranked once,
-- into a table of this migration's own.
CREATE TEMPORARY TABLE ranked_now AS
SELECT t.* FROM products AS p, product_terms_of(p.search, p.id) AS t;
ANALYZE ranked_now;
DELETE FROM product_terms AS t
WHERE NOT EXISTS (
    SELECT FROM ranked_now AS r
    WHERE r.product_id = t.product_id AND r.term = t.term AND r.rank = t.rank
);
INSERT INTO product_terms SELECT * FROM ranked_now ON CONFLICT DO NOTHING;
DROP TABLE ranked_now;
