DELETE FROM recipients WHERE email IS NULL OR display_name IS NULL;
ALTER TABLE recipients
    DROP COLUMN preferences_version,
    DROP COLUMN email_version,
    ALTER COLUMN display_name SET NOT NULL,
    ALTER COLUMN email SET NOT NULL;
