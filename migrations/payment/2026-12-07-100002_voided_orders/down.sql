DROP TABLE voided_orders;
