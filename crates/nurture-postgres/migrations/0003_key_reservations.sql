-- An Idempotency-Key is reserved when its request starts (status 0, no body yet) until
-- `locked_until`, so that a retry arriving while the first attempt runs, in any process, is
-- told so instead of running it twice. NULL once the answer is saved.
ALTER TABLE idempotency_keys ADD COLUMN locked_until timestamptz;
