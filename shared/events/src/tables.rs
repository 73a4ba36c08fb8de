//! The messaging tables every module schema holds (`migrations/_messaging`),
//! for diesel's query builder. Unqualified: a module's pool puts its own
//! schema on the `search_path`, so the same statement reaches that module's
//! outbox, inbox or dead letters.

diesel::table! {
    outbox (id) {
        id -> Uuid,
        seq -> BigInt,
        event_type -> Text,
        aggregate_id -> Text,
        envelope -> Jsonb,
        created_at -> Timestamptz,
        delivered_at -> Nullable<Timestamptz>,
        attempts -> Integer,
        last_error -> Nullable<Text>,
    }
}

diesel::table! {
    inbox (event_id, handler) {
        event_id -> Uuid,
        handler -> Text,
        handled_at -> Timestamptz,
    }
}

diesel::table! {
    dead_letters (id) {
        id -> Uuid,
        handler -> Text,
        event_id -> Uuid,
        event_type -> Text,
        envelope -> Jsonb,
        attempts -> Integer,
        last_error -> Text,
        created_at -> Timestamptz,
        redriven_at -> Nullable<Timestamptz>,
    }
}
