-- The saga's `payment_attempted` flag is set with the order, as
-- `reserve_attempted` already was (ADR 0015): compensation always asks the
-- payment module to void, which answers "no payment" when none was asked
-- for. Before, the flag was written alone just before `authorize`, one
-- writing commit per checkout.
--
-- The default covers rows written by an instance of the version before
-- (during a rolling upgrade it still sets the flag itself before
-- `authorize`); sagas still running may have been begun by it before the
-- flag, so they are marked: at worst one void that finds nothing.
ALTER TABLE sagas ALTER COLUMN payment_attempted SET DEFAULT true;
UPDATE sagas SET payment_attempted = true WHERE NOT done AND NOT payment_attempted;
