-- An order update whose customer's registration has not reached this
-- module yet (the user module's events lag behind the order module's, as
-- they may when the modules run apart) is held, not dropped: a row
-- `held` with the event in `body`, no address yet, which the sender never
-- claims. The registration's handler writes it out for the customer (or
-- drops it if they turned order updates off).
ALTER TABLE notifications
    DROP CONSTRAINT notifications_status_check,
    ADD CONSTRAINT notifications_status_check CHECK (status IN ('pending', 'sent', 'failed', 'held'));
CREATE INDEX notifications_held_idx ON notifications (recipient_user_id) WHERE status = 'held';
