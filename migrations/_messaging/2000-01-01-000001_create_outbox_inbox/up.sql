-- Messaging tables, created in every module's schema (search_path = the
-- module's schema) before the module's own migrations.

-- Events written in the same transaction as the state change they announce;
-- the relay delivers them in `seq` order and marks them delivered.
CREATE TABLE outbox (
    id           uuid        PRIMARY KEY,
    seq          bigserial   NOT NULL UNIQUE,
    event_type   text        NOT NULL,
    aggregate_id text        NOT NULL,
    envelope     jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text
);
CREATE INDEX outbox_undelivered_idx ON outbox (seq) WHERE delivered_at IS NULL;

-- Wakes the relay as soon as an event is committed (it also polls).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('shop_outbox_' || TG_TABLE_SCHEMA, '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Events each handler of this module has handled, written in the handler's
-- own transaction: a redelivered event finds its row and is skipped.
CREATE TABLE inbox (
    event_id   uuid        NOT NULL,
    handler    text        NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, handler)
);

-- Events a handler of this module gave up on after its retries.
CREATE TABLE dead_letters (
    id          uuid        PRIMARY KEY,
    handler     text        NOT NULL,
    event_id    uuid        NOT NULL,
    event_type  text        NOT NULL,
    envelope    jsonb       NOT NULL,
    attempts    integer     NOT NULL,
    last_error  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    redriven_at timestamptz
);
CREATE INDEX dead_letters_open_idx ON dead_letters (created_at) WHERE redriven_at IS NULL;
