DROP INDEX notifications_settled_idx;
ALTER TABLE notifications DROP CONSTRAINT notifications_once;
ALTER TABLE notifications DROP COLUMN once_per;
ALTER TABLE notifications ADD CONSTRAINT notifications_once UNIQUE (event_id, channel, destination);
