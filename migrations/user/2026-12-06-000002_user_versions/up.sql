-- Every change of an account takes its `version` one up, and the user
-- events carry it: events can reach a consumer out of order (several
-- consumers of one broker queue, a requeued or redriven message), and a
-- read model keeps only what is newer than what it holds. Registration is
-- version 1. A constant default: no table rewrite.
ALTER TABLE users ADD COLUMN version bigint NOT NULL DEFAULT 1 CHECK (version >= 1);
