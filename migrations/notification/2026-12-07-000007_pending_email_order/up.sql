-- The email claim (`repo::claim_due`: channel = 'email', ORDER BY bulk,
-- created_at LIMIT 20) reads this index in that order and stops at its
-- limit. Emails only: with webhook rows in it, a claim during a fan-out
-- would visit every pending webhook call (a receiver down with a backlog)
-- before the first bulk email. The webhook claim keeps
-- notifications_pending_age_idx.
CREATE INDEX notifications_pending_email_idx ON notifications (bulk, created_at)
    WHERE status = 'pending' AND channel = 'email';
