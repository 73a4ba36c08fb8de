ALTER TABLE stock DROP COLUMN alerted_version, DROP COLUMN alerted;
