-- Bulk email (a price drop told to every customer who opted into product
-- news) is claimed after every other due email: with one claim order for
-- all, an order confirmation or an account's security notice queued a
-- second after a fan-out of 100k waited behind all of them (hours, at a
-- fresh SMTP session a message). `repo::queue` marks the bulk ones. A row
-- an older instance writes is not bulk (false): it goes in age order, as
-- before. A column with a constant default is added without rewriting the
-- table; the index, which reads it, is the next migration, so that this
-- one's exclusive lock is over at once.
ALTER TABLE notifications ADD COLUMN bulk boolean NOT NULL DEFAULT false;
