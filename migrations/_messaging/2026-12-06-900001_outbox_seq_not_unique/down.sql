ALTER TABLE outbox ADD CONSTRAINT outbox_seq_key UNIQUE (seq);
