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
$$;
