-- Bulk email (a price drop told to every customer who opted into product
-- news) is claimed after every other due email: with one claim order for
-- all, an order confirmation or an account's security notice queued a
-- second after a fan-out of 100k waited behind all of them (hours, at a
-- fresh SMTP session a message). `repo::queue` marks the bulk ones; the
-- claim reads this index in (bulk, created_at) order and stops at its
-- limit. A row an older instance writes is not bulk (false): it goes in
-- age order, as before.
ALTER TABLE notifications ADD COLUMN bulk boolean NOT NULL DEFAULT false;
CREATE INDEX notifications_pending_bulk_age_idx ON notifications (bulk, created_at)
    WHERE status = 'pending';
