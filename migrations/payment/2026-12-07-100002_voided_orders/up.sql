-- Orders whose payment was voided before any payment of them was opened:
-- the saga turned back while its authorization was still on its way (a
-- call from another process that timed out there and had not arrived
-- here). Such an authorization, should it still arrive, is refused, and
-- one already at the provider is voided there, instead of leaving a hold
-- on the customer's card that nothing would release. Rows older than a
-- week are pruned (an authorization arrives within its caller's deadline,
-- at most minutes).
CREATE TABLE voided_orders (
    order_id   uuid        PRIMARY KEY,
    voided_at  timestamptz NOT NULL DEFAULT now()
);
