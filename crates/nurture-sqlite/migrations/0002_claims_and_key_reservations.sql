-- A claim on SQLite is the scheduler's IMMEDIATE transaction itself (one writer at a time), so the
-- lease stamp written by 0001's claim was a second write of every claimed row for nothing.
ALTER TABLE lead_nurture_enrollments DROP COLUMN claimed_until;

-- An Idempotency-Key is reserved when its request starts (status 0, no body yet) until
-- `locked_until`, so that a retry arriving while the first attempt runs, in any process, is
-- told so instead of running it twice. NULL once the answer is saved.
ALTER TABLE idempotency_keys ADD COLUMN locked_until INTEGER;
