-- The announcements went out; nothing to take back.
SELECT 1;
