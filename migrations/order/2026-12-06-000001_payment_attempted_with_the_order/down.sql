ALTER TABLE sagas ALTER COLUMN payment_attempted SET DEFAULT false;
