DROP INDEX notifications_held_idx;
DELETE FROM notifications WHERE status = 'held';
ALTER TABLE notifications
    DROP CONSTRAINT notifications_status_check,
    ADD CONSTRAINT notifications_status_check CHECK (status IN ('pending', 'sent', 'failed'));
