-- One open dead letter per event and handler: an event offered again while
-- it stays refused (a later event of its batch failing for now, an ack
-- lost) wrote one more copy each time, filling the list an operator reads.
-- Open copies kept before are folded into their newest; the table is
-- locked so that none is added between the fold and the index. (An
-- instance of the version before, during a rolling upgrade, fails to add a
-- second copy and offers the event again later, as for a database error.)
LOCK TABLE dead_letters IN SHARE ROW EXCLUSIVE MODE;
DELETE FROM dead_letters d
WHERE redriven_at IS NULL
  AND EXISTS (
    SELECT 1 FROM dead_letters newer
    WHERE newer.event_id = d.event_id AND newer.handler = d.handler
      AND newer.redriven_at IS NULL
      AND (newer.created_at, newer.id) > (d.created_at, d.id)
  );
CREATE UNIQUE INDEX dead_letters_open_once ON dead_letters (event_id, handler)
    WHERE redriven_at IS NULL;
