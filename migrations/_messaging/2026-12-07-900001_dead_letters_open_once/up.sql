-- One open dead letter per event and handler: an event offered again while
-- it stays refused (a later event of its batch failing for now, an ack
-- lost) wrote one more copy each time, filling the list an operator reads.
-- Open copies kept before are folded into their newest.
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
