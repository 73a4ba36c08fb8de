-- Stock, its history and reservations. Runs with search_path = inventory.
CREATE TABLE stock (
    sku                 text        PRIMARY KEY CHECK (sku ~ '^[A-Z0-9][A-Z0-9._-]{0,63}$'),
    on_hand             integer     NOT NULL CHECK (on_hand >= 0),
    reserved            integer     NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    low_stock_threshold integer     NOT NULL CHECK (low_stock_threshold >= 0),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- available = on_hand - reserved is never negative.
    CONSTRAINT stock_available_not_negative CHECK (reserved <= on_hand)
);

-- Append-only: every change of a SKU's counts.
CREATE TABLE movements (
    id             uuid        PRIMARY KEY,
    sku            text        NOT NULL REFERENCES stock (sku),
    kind           text        NOT NULL CHECK (kind IN ('adjustment', 'reservation', 'release', 'expiry', 'sale')),
    quantity       integer     NOT NULL,
    reason         text,
    order_id       uuid,
    on_hand_after  integer     NOT NULL,
    reserved_after integer     NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX movements_by_sku_idx ON movements (sku, id DESC);

CREATE TABLE reservations (
    order_id   uuid        PRIMARY KEY,
    status     text        NOT NULL CHECK (status IN ('active', 'committed', 'released', 'expired')),
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reservations_expiring_idx ON reservations (expires_at) WHERE status = 'active';

CREATE TABLE reservation_lines (
    order_id uuid    NOT NULL REFERENCES reservations (order_id),
    sku      text    NOT NULL REFERENCES stock (sku),
    quantity integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);
