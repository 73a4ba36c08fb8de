-- The pruning job deletes whole sessions (families) whose every token has
-- expired (`repo::delete_expired_refresh_tokens`): the expired tokens by
-- this index rather than the whole table, and for each the family's live
-- one by the second, without visiting the family's rows in the table.
CREATE INDEX refresh_tokens_expiry_idx ON refresh_tokens (expires_at);
DROP INDEX refresh_tokens_family_idx;
CREATE INDEX refresh_tokens_family_expiry_idx ON refresh_tokens (family_id, expires_at);
