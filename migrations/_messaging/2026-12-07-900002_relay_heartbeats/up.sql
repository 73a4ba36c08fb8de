-- Which live instance's in-process relay dispatches to which handlers. In a
-- rolling upgrade of the monolith an older instance's relay would hand an
-- event only to the handlers the older binary has and mark it delivered:
-- lost for a handler the newer binary adds. Each in-process relay writes
-- its instance's row here (`handler|event_type` pairs it dispatches this
-- outbox's events to, and until when the row counts as live, on the
-- database's clock) every few seconds and with any batch that outlasts a
-- beat, and stands down while a live instance's pairs are a strict
-- superset of its own (shared/events/src/relay.rs, `Audience`).
CREATE TABLE relay_heartbeats (
    instance_id uuid        PRIMARY KEY,
    audience    text[]      NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    live_until  timestamptz NOT NULL
);
