-- Products of the catalog. Runs with search_path = catalog.
CREATE TABLE products (
    id                 uuid        PRIMARY KEY,
    sku                text        NOT NULL CHECK (sku ~ '^[A-Z0-9][A-Z0-9._-]{0,63}$'),
    name               text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description        text        CHECK (char_length(description) <= 5000),
    price_amount_minor bigint      NOT NULL CHECK (price_amount_minor >= 0),
    price_currency     text        NOT NULL CHECK (price_currency ~ '^[A-Z]{3}$'),
    active             boolean     NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT products_sku_key UNIQUE (sku)
);
