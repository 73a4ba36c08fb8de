-- Accounts and refresh tokens. Runs with search_path = users
-- (`user` is a reserved word in PostgreSQL, so the schema is `users`).
CREATE TABLE users (
    id                   uuid        PRIMARY KEY,
    email                text        NOT NULL CHECK (email = lower(email) AND char_length(email) <= 254),
    password_hash        text        NOT NULL,
    display_name         text        NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 100),
    roles                text[]      NOT NULL CHECK (cardinality(roles) >= 1 AND roles <@ ARRAY['customer', 'admin']),
    status               text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    notify_order_updates boolean     NOT NULL DEFAULT true,
    notify_product_news  boolean     NOT NULL DEFAULT false,
    notify_marketing     boolean     NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key UNIQUE (email)
);

-- Refresh tokens are stored as SHA-256 hashes. A login starts a family;
-- each refresh spends one token and adds the next to the family. Presenting
-- a spent token revokes the whole family (someone replayed a stolen token).
CREATE TABLE refresh_tokens (
    id         uuid        PRIMARY KEY,
    family_id  uuid        NOT NULL,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash bytea       NOT NULL,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    spent_at   timestamptz,
    revoked_at timestamptz,
    CONSTRAINT refresh_tokens_hash_key UNIQUE (token_hash)
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_live_by_user_idx ON refresh_tokens (user_id) WHERE revoked_at IS NULL;
