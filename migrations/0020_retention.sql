-- What the retention job deletes once older than RETENTION_DAYS, found by age.
CREATE INDEX spans_ended ON spans (end_ns);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
