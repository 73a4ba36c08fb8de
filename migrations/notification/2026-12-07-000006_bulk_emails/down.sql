ALTER TABLE notifications DROP COLUMN bulk;
