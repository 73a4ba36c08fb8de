-- Categories (one level of nesting), product details, full-text search and
-- the availability read model fed by inventory events.
CREATE TABLE categories (
    id         uuid        PRIMARY KEY,
    name       text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    slug       text        NOT NULL CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' AND char_length(slug) <= 100),
    parent_id  uuid        REFERENCES categories (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT categories_slug_key UNIQUE (slug),
    CONSTRAINT categories_not_own_parent CHECK (parent_id <> id)
);

ALTER TABLE products
    ADD COLUMN category_id  uuid    REFERENCES categories (id),
    ADD COLUMN images       text[]  NOT NULL DEFAULT '{}' CHECK (cardinality(images) <= 20),
    ADD COLUMN attributes   jsonb   NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    -- unknown: never stocked; maintained from inventory.stock_changed.v1 events.
    ADD COLUMN availability text    NOT NULL DEFAULT 'unknown'
        CHECK (availability IN ('unknown', 'in_stock', 'low_stock', 'out_of_stock')),
    ADD COLUMN search       tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', sku), 'A')
        || setweight(to_tsvector('english', name), 'A')
        || setweight(to_tsvector('english', coalesce(description, '')), 'B')
    ) STORED;

CREATE INDEX products_search_idx ON products USING gin (search);
CREATE INDEX products_category_idx ON products (category_id, id);
CREATE INDEX products_price_idx ON products (price_amount_minor, id);
CREATE INDEX products_name_idx ON products ((name COLLATE "C"), id);
CREATE INDEX products_newest_idx ON products (created_at DESC, id DESC);
