-- A word longer than any one-word search leaves out its term (ADR 0021).
-- PostgreSQL keeps words of up to 2047 bytes in a search vector (a long
-- URL in a description is one), and a term is the word's text as a
-- tsquery, its quotes doubled: the entry of such a word in the primary key
-- of `product_terms` could pass the 2,704 bytes a btree entry may take,
-- and writing the product failed. A one-word search reads terms only for a
-- text of ASCII letters of at most 200 characters (`repo::one_word`, the
-- search's length limit), so a word over 1,000 bytes is never looked up:
-- it is not kept. The product is still found by it through its vector
-- (`products.search`, `product_search`), as any search of several words.
CREATE OR REPLACE FUNCTION product_terms_of(words tsvector, product uuid)
    RETURNS TABLE (term text, rank real, product_id uuid)
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path FROM CURRENT
AS $$
    SELECT query::text, ts_rank(words, query), product
    FROM unnest(words) AS word,
         -- A quoted lexeme is read as is: a backslash escapes, a quote is doubled.
         LATERAL (SELECT ('''' || replace(replace(word.lexeme, '\', '\\'), '''', '''''') || '''')::tsquery
                  AS query) AS one
    WHERE octet_length(word.lexeme) <= 1000
$$;

-- Terms of such words written before (those that fitted) go too: the
-- triggers now find a product's entries by this function, so they would
-- never be deleted with their product. A term is the lexeme quoted, its
-- quotes and backslashes doubled; undone here to measure the lexeme.
DELETE FROM product_terms
WHERE octet_length(term) > 1002
  AND octet_length(replace(replace(substr(term, 2, length(term) - 2), '''''', ''''), '\\', '\')) > 1000;
