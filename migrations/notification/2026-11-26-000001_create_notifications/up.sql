-- Notifications and what they need. Runs with search_path = notification.

-- A read model of the user module's accounts, fed by its events, so
-- notifications never call the user module.
CREATE TABLE recipients (
    user_id       uuid        PRIMARY KEY,
    email         text        NOT NULL,
    display_name  text        NOT NULL,
    order_updates boolean     NOT NULL,
    product_news  boolean     NOT NULL,
    marketing     boolean     NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Webhook endpoints an admin subscribed to event types.
CREATE TABLE webhook_subscriptions (
    id          uuid        PRIMARY KEY,
    url         text        NOT NULL CHECK (url ~ '^https?://'),
    secret      text        NOT NULL,
    event_types text[]      NOT NULL CHECK (cardinality(event_types) >= 1),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per message to send; the sender delivers, retries and records.
-- (event_id, channel, destination) is unique: a redelivered event adds nothing.
CREATE TABLE notifications (
    id                uuid        PRIMARY KEY,
    event_id          uuid        NOT NULL,
    event_type        text        NOT NULL,
    request_id        text,
    recipient_user_id uuid,
    channel           text        NOT NULL CHECK (channel IN ('email', 'webhook')),
    destination       text        NOT NULL,
    subscription_id   uuid,
    subject           text        NOT NULL,
    body              text        NOT NULL,
    status            text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts          integer     NOT NULL DEFAULT 0,
    last_error        text,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    created_at        timestamptz NOT NULL DEFAULT now(),
    sent_at           timestamptz,
    CONSTRAINT notifications_once UNIQUE (event_id, channel, destination)
);
CREATE INDEX notifications_due_idx ON notifications (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notifications_recipient_idx ON notifications (recipient_user_id, id);
