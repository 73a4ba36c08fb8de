-- One message per event and channel for each webhook subscription, and for
-- each account (emails; the admin's notices have none), instead of one per
-- destination: two subscriptions to one URL (the way to rotate a webhook's
-- secret) each get their call, signed with their own secret, and the
-- admin's notice of a price change is not dropped when the admin's address
-- also receives that product's news as a user. A redelivered event still
-- queues nothing new.
--
-- Generated, under the constraint's old name, so that instances still
-- running the code from before (`ON CONFLICT ON CONSTRAINT
-- notifications_once`) keep the same rule during a rolling upgrade. Adding
-- a stored column rewrites the table once (retention keeps it to
-- `notification.retention_days`).
ALTER TABLE notifications
    ADD COLUMN once_per uuid NOT NULL GENERATED ALWAYS AS
        (COALESCE(subscription_id, recipient_user_id, '00000000-0000-0000-0000-000000000000'::uuid)) STORED;
ALTER TABLE notifications
    DROP CONSTRAINT notifications_once,
    ADD CONSTRAINT notifications_once UNIQUE (event_id, channel, destination, once_per);

-- What retention deletes (`repo::prune`, hourly): found by its age, not by
-- reading every message kept, bodies and all.
CREATE INDEX notifications_settled_idx ON notifications (created_at) WHERE status IN ('sent', 'failed');
