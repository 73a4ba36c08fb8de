-- Until now a change of display name or status published no event, so the
-- notification module greeted renamed accounts by their first name and
-- sent product news to disabled ones. Their events exist from today
-- (`user.display_name_changed.v1`, `user.status_changed.v1`): announce
-- once the state of every account that may have changed since its
-- registration (changed at all: `updated_at` after `created_at`), at its
-- current version, in the envelope `events::outbox` writes.
INSERT INTO outbox (id, event_type, aggregate_id, envelope)
SELECT e.id, e.event_type, u.id::text, jsonb_build_object(
    'id', e.id, 'type', e.event_type, 'source', 'user', 'aggregate_id', u.id::text,
    'occurred_at', now(), 'request_id', NULL, 'causation_id', NULL, 'payload', e.payload)
FROM users AS u
CROSS JOIN LATERAL (VALUES
    (gen_random_uuid(), 'user.display_name_changed.v1',
     jsonb_build_object('user_id', u.id, 'display_name', u.display_name, 'version', u.version)),
    (gen_random_uuid(), 'user.status_changed.v1',
     jsonb_build_object('user_id', u.id, 'status', u.status, 'version', u.version))
) AS e (id, event_type, payload)
WHERE u.updated_at > u.created_at
ORDER BY u.id, e.event_type;
