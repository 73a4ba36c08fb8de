DROP INDEX notifications_pending_bulk_age_idx;
ALTER TABLE notifications DROP COLUMN bulk;
