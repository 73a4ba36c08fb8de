-- Which stock alert a SKU raised last, so that each is raised once per
-- fall and not again with every reservation that comes and goes: a popular
-- SKU near its threshold, reserved, released (a declined card, an expiry)
-- and reserved again, mailed the admins "low stock" every time, and
-- "out of stock" every time its last unit went round.
--
-- `alerted`: 'low' once a fall to the threshold or below (above zero)
-- raised `inventory.low_stock.v1`; 'out' once a fall to zero raised
-- `inventory.out_of_stock.v1` (after low too: out of stock is news after
-- low); 'none' before either. Set back to 'none' only when units come in
-- (an adjustment, or a return of sold units) and leave more than the
-- threshold available (fewer take 'out' back to 'low', raising nothing):
-- units a release or an expiry gives back undo a reservation, whose fall
-- was told already. `alerted_version` is the row's `version` at the move
-- that raised it: each stock move sets both in its `UPDATE`
-- (`repo::alert_set`; the rule is `domain::Alert`'s), and announces the
-- alert when the row it returns has `alerted_version = version`.
--
-- Constant defaults: no table rewrite (the CHECKs read the table once).
ALTER TABLE stock
    ADD COLUMN alerted text NOT NULL DEFAULT 'none' CHECK (alerted IN ('none', 'low', 'out')),
    ADD COLUMN alerted_version bigint NOT NULL DEFAULT 0 CHECK (alerted_version >= 0);

-- SKUs low or out now were announced when they got there (the earlier
-- rule raised an alert on each crossing): taken as alerted, so the first
-- move after this release does not alert them again. One row a SKU, those
-- at or below their threshold only. Their `alerted_version` stays 0: no
-- move of theirs is taken for the one that raised it.
UPDATE stock
SET alerted = CASE WHEN on_hand = reserved THEN 'out' ELSE 'low' END
WHERE on_hand - reserved <= low_stock_threshold;
