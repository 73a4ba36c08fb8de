-- User events can arrive out of order (several consumers of one broker
-- queue, a requeued or redriven message). Each part of a recipient keeps
-- the newest account version it was taken from, and an older event
-- changes nothing. A change that arrives before the account's
-- registration is kept too, in a row not `registered` (not a recipient
-- until its registration is handled): an opt-out must not be lost because
-- it overtook the registration. NULL version: never set; 0: set before
-- events carried versions (older than any event that carries one).
--
-- `registered` is true for every row until now; the new code writes false
-- in the rows it makes before a registration, and the default stays true
-- for the inserts of instances still running the code from before, during
-- a rolling upgrade (which are registrations). `active`: the account was
-- not disabled by an admin (a disabled account gets no product news; news
-- of its own orders still goes).
ALTER TABLE recipients
    ALTER COLUMN email DROP NOT NULL,
    ALTER COLUMN display_name DROP NOT NULL,
    ADD COLUMN registered boolean NOT NULL DEFAULT true,
    ADD COLUMN active boolean NOT NULL DEFAULT true,
    ADD COLUMN email_version bigint,
    ADD COLUMN name_version bigint,
    ADD COLUMN preferences_version bigint,
    ADD COLUMN status_version bigint;
UPDATE recipients
SET email_version = 0, name_version = 0, preferences_version = 0, status_version = 0;
