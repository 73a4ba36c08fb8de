-- Carts, orders (event-sourced), the checkout saga and idempotency keys.
-- Runs with search_path = orders (`order` is a reserved word). No card number is ever stored: the
-- provider's token and the last four digits only.

CREATE TABLE carts (
    customer_id uuid        PRIMARY KEY,
    items       jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The source of truth: every change of an order, in order, never changed.
CREATE TABLE order_events (
    order_id   uuid        NOT NULL,
    seq        integer     NOT NULL CHECK (seq > 0),
    kind       text        NOT NULL,
    data       jsonb       NOT NULL DEFAULT '{}',
    request_id text,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, seq)
);

CREATE FUNCTION order_events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'order events are append-only';
END;
$$;
CREATE TRIGGER order_events_append_only BEFORE UPDATE OR DELETE ON order_events
    FOR EACH ROW EXECUTE FUNCTION order_events_are_append_only();

-- The projection: the current state of each order, rebuilt from
-- order_events by the same fold that keeps it up to date.
CREATE TABLE orders (
    id          uuid        PRIMARY KEY,
    customer_id uuid        NOT NULL,
    version     integer     NOT NULL,
    state       jsonb       NOT NULL,
    status      text        NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX orders_by_customer_idx ON orders (customer_id, id DESC);

-- The checkout saga of each order: which way it runs, who drives it now.
CREATE TABLE sagas (
    order_id        uuid        PRIMARY KEY,
    direction       text        NOT NULL CHECK (direction IN ('forward', 'compensate')),
    -- With direction = compensate: the status the order ends in, and why.
    outcome         text        CHECK (outcome IN ('failed', 'cancelled')),
    reason          text,
    -- The card as the provider tokenized it (never the number).
    payment_method  text        NOT NULL,
    card_last4      text        NOT NULL,
    -- Set before the first call of each kind, so a crash before its answer
    -- was recorded still leads compensation to undo it.
    reserve_attempted boolean   NOT NULL DEFAULT false,
    payment_attempted boolean   NOT NULL DEFAULT false,
    -- The request that placed the order (for logs and events).
    request_id      text,
    -- The step being run (recorded before the call) and the last error.
    step            text,
    done            boolean     NOT NULL DEFAULT false,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    -- Lease: the instance driving the saga, until when. An expired lease
    -- (its owner died) lets the recovery worker of any instance take over.
    lease_owner     uuid,
    lease_until     timestamptz,
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sagas_due_idx ON sagas (next_attempt_at) WHERE NOT done;

-- POST /orders idempotency keys, per customer (Stripe's semantics): the
-- first response is kept and replayed; 24 h later the key may be reused.
CREATE TABLE idempotency_keys (
    customer_id     uuid        NOT NULL,
    key             text        NOT NULL,
    fingerprint     text        NOT NULL,
    order_id        uuid,
    response_status integer,
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
