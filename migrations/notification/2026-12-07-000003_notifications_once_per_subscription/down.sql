DROP INDEX notifications_settled_idx;
ALTER TABLE notifications DROP CONSTRAINT notifications_once;
-- The old rule allows one message per event, channel and destination: of
-- the messages the new one allowed beside each other, the first stays.
DELETE FROM notifications AS later
WHERE EXISTS (SELECT 1 FROM notifications AS first
              WHERE first.event_id = later.event_id AND first.channel = later.channel
                AND first.destination = later.destination AND first.id < later.id);
ALTER TABLE notifications DROP COLUMN once_per;
ALTER TABLE notifications ADD CONSTRAINT notifications_once UNIQUE (event_id, channel, destination);
