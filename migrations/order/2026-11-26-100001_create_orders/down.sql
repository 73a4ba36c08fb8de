DROP TABLE idempotency_keys;
DROP TABLE sagas;
DROP TABLE orders;
DROP TABLE order_events;
DROP FUNCTION order_events_are_append_only();
DROP TABLE carts;
