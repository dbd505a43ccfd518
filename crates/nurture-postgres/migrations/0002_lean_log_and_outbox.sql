-- The activity log and the outbox are written several rows per executed step (issue #4,
-- "Figures"): every index and every foreign-key check on them is paid per step, and the
-- scheduler's throughput is bound by the server's CPU. This keeps what the queries use, as the
-- SQLite schema does.

-- Activities are read per tenant in (at, id) order and per lead, never by id alone. The primary
-- key becomes the time order (it was the separate activities_by_time), and an enrollment's log
-- is reached through its lead (the store adds the enrollment's lead to such a query), as on
-- SQLite: two b-tree writes per activity instead of four.
ALTER TABLE activities DROP CONSTRAINT activities_pkey;
DROP INDEX activities_by_time;
DROP INDEX activities_by_enrollment;
ALTER TABLE activities ADD PRIMARY KEY (tenant_id, at, id);

-- No foreign-key checks on the two append-only tables. Their rows are written by the engine in
-- the transaction that read the tenant, lead and enrollment they refer to, and tenants and
-- leads are never deleted. Each check was a lookup and a FOR KEY SHARE lock on the referenced
-- row per inserted row: two activities per step locked the one tenant row, so every worker
-- of a tenant met there, and a message locked its lead just before the batch updated it.
ALTER TABLE activities DROP CONSTRAINT activities_tenant_id_fkey;
ALTER TABLE messages DROP CONSTRAINT messages_tenant_id_lead_id_fkey;

-- A message's idempotency key is `<enrollment>-<step>` (unique through messages_one_per_step)
-- or, for a message recorded from outside a sequence, `external-<fresh uuid>`: a unique index
-- of its own only cost a b-tree write per message.
ALTER TABLE messages DROP CONSTRAINT messages_tenant_id_idempotency_key_key;

-- (lead_nurture_enrollments.claimed_until is no longer written on this backend: a claim is the
-- row lock of the batch's transaction alone, and stamping it cost a second write per step.)
