-- Payments (one per order) and their append-only ledger. Runs with
-- search_path = payment. Card numbers are never stored: the provider's
-- token and the last four digits only.
CREATE TABLE payments (
    id             uuid        PRIMARY KEY,
    order_id       uuid        NOT NULL UNIQUE,
    customer_id    uuid        NOT NULL,
    amount_minor   bigint      NOT NULL CHECK (amount_minor > 0),
    currency       text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    payment_method text        NOT NULL,
    card_last4     text        NOT NULL CHECK (card_last4 ~ '^[0-9]{4}$'),
    status         text        NOT NULL CHECK (status IN ('authorizing', 'authorized', 'declined', 'captured', 'voided', 'refunded')),
    provider_ref   text,
    decline_code   text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_by_customer_idx ON payments (customer_id, id DESC);

-- Every step of every payment, never changed once written.
CREATE TABLE ledger (
    id           bigserial   PRIMARY KEY,
    payment_id   uuid        NOT NULL REFERENCES payments (id),
    kind         text        NOT NULL CHECK (kind IN ('authorized', 'declined', 'captured', 'voided', 'refunded')),
    amount_minor bigint      NOT NULL,
    currency     text        NOT NULL,
    reason       text,
    provider_ref text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- A step happens once per payment.
    CONSTRAINT ledger_once UNIQUE (payment_id, kind)
);

CREATE FUNCTION ledger_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the payment ledger is append-only';
END;
$$;
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
