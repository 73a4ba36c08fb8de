-- The sender claims due messages oldest first (`repo::claim_due`: ORDER BY
-- created_at LIMIT 20). With only the index on next_attempt_at, each claim
-- read and sorted every due row: 365 ms a claim with a million pending
-- (a price drop to a large opted-in audience), past the statement timeout
-- with ten million, and then no message of any kind went out. By this
-- index the claim reads the oldest pending rows and stops at its limit
-- (0.07 ms with a million).
CREATE INDEX notifications_pending_age_idx ON notifications (created_at) WHERE status = 'pending';
