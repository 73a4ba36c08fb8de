-- A committed reservation can be put back on the shelf (the order was
-- cancelled after the sale): status `returned`, movement kind `return`.
ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_status_check
    CHECK (status IN ('active', 'committed', 'released', 'expired', 'returned'));
ALTER TABLE movements DROP CONSTRAINT movements_kind_check;
ALTER TABLE movements ADD CONSTRAINT movements_kind_check
    CHECK (kind IN ('adjustment', 'reservation', 'release', 'expiry', 'sale', 'return'));
