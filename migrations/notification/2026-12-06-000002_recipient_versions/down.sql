DELETE FROM recipients WHERE NOT registered OR email IS NULL OR display_name IS NULL;
ALTER TABLE recipients
    DROP COLUMN status_version,
    DROP COLUMN preferences_version,
    DROP COLUMN name_version,
    DROP COLUMN email_version,
    DROP COLUMN active,
    DROP COLUMN registered,
    ALTER COLUMN display_name SET NOT NULL,
    ALTER COLUMN email SET NOT NULL;
