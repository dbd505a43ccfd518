-- A claim on SQLite is the scheduler's IMMEDIATE transaction itself (one writer at a time), so the
-- lease stamp written by 0001's claim was a second write of every claimed row for nothing.
ALTER TABLE lead_nurture_enrollments DROP COLUMN claimed_until;
