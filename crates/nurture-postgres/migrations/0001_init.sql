-- Nurture on PostgreSQL: the first schema. Released migrations are never edited; add a new file.
--
-- Conventions (SPEC section 2): ids are uuid (v7, so they sort by creation), instants are
-- timestamptz, JSON columns are jsonb, the seed's enums are PostgreSQL enums with the seed's
-- values. Every key carries tenant_id: primary keys are (tenant_id, id), every foreign key
-- includes tenant_id, so the schema can be distributed by tenant (Citus: tenants as the
-- distribution anchor, every other table co-located on tenant_id).
--
-- Enums: the seed's three enum columns (sequence status, step channel, enrollment status) are
-- PostgreSQL enums. The other closed sets are text + CHECK, as on SQLite, because they are ours
-- and grow (approvals and tasks already gained `cancelled` beyond SPEC's lists; activity types
-- will grow with outbound events): a CHECK is replaced in one transactional migration, while an
-- enum value added by `ALTER TYPE ... ADD VALUE` cannot be used in the transaction that adds it
-- and can never be removed.
--
-- Text that the application orders by and that a tenant chooses (template ids) is COLLATE "C",
-- so lists page in byte order on every server, exactly as on SQLite.
--
-- Isolation (issue #4): every table has row-level security ENABLEd and FORCEd; the application
-- runs as nurture_app (SET ROLE on connect), which owns nothing and does not bypass RLS, and
-- sets the tenant per transaction with set_config(..., true). These migrations run as the
-- connecting user, who owns the tables.

-- The application role: no login of its own, reached by SET ROLE from the connecting user.
-- Roles are cluster-wide, so another database may have created it already (or an
-- administrator did, for an owner without CREATEROLE); two migrations racing on a fresh
-- cluster meet on pg_authid's unique index rather than as duplicate_object.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nurture_app') THEN
        CREATE ROLE nurture_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- A non-superuser owner needs membership for SET ROLE nurture_app (a superuser may SET ROLE to
-- any role, and pg_has_role is always true for it).
DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'nurture_app', 'MEMBER') THEN
        EXECUTE format('GRANT nurture_app TO %I', current_user);
    END IF;
END
$$;

CREATE TYPE nurture_sequence_status AS ENUM ('draft', 'active', 'paused', 'archived');
CREATE TYPE nurture_channel AS ENUM ('email', 'task', 'call_reminder', 'wait');
CREATE TYPE nurture_enrollment_status AS ENUM ('active', 'paused', 'completed', 'exited');

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    settings    jsonb NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE TABLE users (
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    id             uuid NOT NULL,
    email          text NOT NULL,
    role           text NOT NULL CHECK (role IN ('admin', 'editor', 'approver', 'viewer')),
    password_hash  text,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, email)
);

-- The one key without tenant_id: a key is looked up by its prefix before the tenant is known
-- (SPEC section 5, issue #3), and two tenants must never share a prefix. On Citus this table
-- would be a reference table (it is small and read-mostly) rather than distributed.
CREATE TABLE api_keys (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    id          uuid NOT NULL,
    user_id     uuid NOT NULL,
    prefix      text NOT NULL UNIQUE,
    hash        bytea NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);

CREATE TABLE idempotency_keys (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    status        integer NOT NULL,
    body          bytea NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

CREATE TABLE leads (
    tenant_id             uuid NOT NULL REFERENCES tenants (id),
    id                    uuid NOT NULL,
    email                 text NOT NULL,
    first_name            text,
    last_name             text,
    company               text,
    timezone              text,
    status                text NOT NULL CHECK (status IN ('new', 'contacted', 'qualified', 'converted', 'disqualified')),
    score                 bigint NOT NULL,
    score_band            text,
    segments              text[] NOT NULL,
    attributes            jsonb NOT NULL,
    owner_id              uuid,
    do_not_contact        boolean NOT NULL,
    unsubscribed          boolean NOT NULL,
    bounced               boolean NOT NULL,
    last_reply_at         timestamptz,
    last_reply_sentiment  text CHECK (last_reply_sentiment IN ('positive', 'neutral', 'negative', 'out_of_office')),
    last_engaged_at       timestamptz,
    last_outbound_at      timestamptz,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE templates (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    id            varchar(255) COLLATE "C" NOT NULL,
    name          text NOT NULL,
    subject       text NOT NULL,
    body          text NOT NULL,
    html_body     text,
    pre_approved  boolean NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE lead_nurture_sequences (
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    id           uuid NOT NULL,
    name         varchar(255) NOT NULL,
    status       nurture_sequence_status NOT NULL,
    entry_rules  jsonb,
    exit_rules   jsonb NOT NULL,
    created_by   uuid NOT NULL,
    priority     integer NOT NULL DEFAULT 0,
    version      bigint NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, created_by) REFERENCES users (tenant_id, id)
);

CREATE TABLE lead_nurture_sequence_steps (
    tenant_id                uuid NOT NULL,
    sequence_id              uuid NOT NULL,
    step_order               integer NOT NULL CHECK (step_order >= 1),
    channel                  nurture_channel NOT NULL,
    delay_hours              integer NOT NULL CHECK (delay_hours >= 0),
    template_id              varchar(255) COLLATE "C",
    requires_human_approval  boolean NOT NULL,
    conditions               jsonb,
    PRIMARY KEY (tenant_id, sequence_id, step_order),
    FOREIGN KEY (tenant_id, sequence_id) REFERENCES lead_nurture_sequences (tenant_id, id) ON DELETE CASCADE
);

-- SPEC section 2: step orders of a sequence are 1..N without gaps. Steps are replaced by a
-- delete and a multi-row insert, so the rule is checked on the final state, at commit (a
-- deferred constraint trigger): with step_order >= 1 and unique, count = max means 1..N.
CREATE FUNCTION lead_nurture_sequence_steps_check_no_gaps() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    t uuid := coalesce(NEW.tenant_id, OLD.tenant_id);
    s uuid := coalesce(NEW.sequence_id, OLD.sequence_id);
    n bigint;
    top integer;
BEGIN
    SELECT count(*), coalesce(max(step_order), 0) INTO n, top
    FROM lead_nurture_sequence_steps WHERE tenant_id = t AND sequence_id = s;
    IF n <> top THEN
        RAISE EXCEPTION 'step orders must run 1..N without gaps'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'lead_nurture_sequence_steps_no_gaps';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER lead_nurture_sequence_steps_no_gaps
AFTER INSERT OR UPDATE OR DELETE ON lead_nurture_sequence_steps
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION lead_nurture_sequence_steps_check_no_gaps();

CREATE TABLE lead_nurture_enrollments (
    tenant_id             uuid NOT NULL,
    id                    uuid NOT NULL,
    lead_id               uuid NOT NULL,
    sequence_id           uuid NOT NULL,
    current_step_order    integer NOT NULL CHECK (current_step_order >= 1),
    status                nurture_enrollment_status NOT NULL,
    source                text NOT NULL CHECK (source IN ('manual', 'auto')),
    enrolled_on           timestamptz NOT NULL,
    next_step_on          timestamptz,
    exit_reason           varchar(255),
    paused_reason         text CHECK (paused_reason IN ('awaiting_approval', 'awaiting_task', 'manual')),
    approved_approval_id  uuid,
    -- Stamped by the scheduler's claim; the claim itself is the row lock (FOR UPDATE SKIP
    -- LOCKED), held until the batch commits or its session dies.
    claimed_until         timestamptz,
    ended_at              timestamptz,
    updated_at            timestamptz NOT NULL,
    version               bigint NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, lead_id) REFERENCES leads (tenant_id, id),
    FOREIGN KEY (tenant_id, sequence_id) REFERENCES lead_nurture_sequences (tenant_id, id)
);

-- SPEC section 2: at most one active or paused enrollment per lead, across all sequences.
CREATE UNIQUE INDEX lead_nurture_enrollments_one_live_per_lead
    ON lead_nurture_enrollments (tenant_id, lead_id) WHERE status IN ('active', 'paused');
-- The scheduler's pickup order (next_step_on, then id for a stable order among equals).
CREATE INDEX lead_nurture_enrollments_due
    ON lead_nurture_enrollments (next_step_on, id) WHERE status = 'active';
-- Cooldown lookups and per-lead lists.
CREATE INDEX lead_nurture_enrollments_by_lead
    ON lead_nurture_enrollments (tenant_id, lead_id, sequence_id, ended_at);
CREATE INDEX lead_nurture_enrollments_by_sequence
    ON lead_nurture_enrollments (tenant_id, sequence_id, status);
CREATE INDEX lead_nurture_enrollments_ended
    ON lead_nurture_enrollments (tenant_id, ended_at) WHERE ended_at IS NOT NULL;

CREATE TABLE approvals (
    tenant_id        uuid NOT NULL,
    id               uuid NOT NULL,
    enrollment_id    uuid NOT NULL,
    lead_id          uuid NOT NULL,
    sequence_id      uuid NOT NULL,
    step_order       integer NOT NULL,
    template_id      varchar(255) COLLATE "C",
    subject          text NOT NULL,
    body             text NOT NULL,
    html_body        text,
    author           text NOT NULL CHECK (author IN ('template', 'agent')),
    status           text NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'cancelled')),
    decided_by       uuid,
    decided_at       timestamptz,
    decision_reason  text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, enrollment_id) REFERENCES lead_nurture_enrollments (tenant_id, id)
);
CREATE INDEX approvals_by_status ON approvals (tenant_id, status, id);
CREATE INDEX approvals_by_enrollment ON approvals (tenant_id, enrollment_id);

CREATE TABLE tasks (
    tenant_id      uuid NOT NULL,
    id             uuid NOT NULL,
    enrollment_id  uuid NOT NULL,
    lead_id        uuid NOT NULL,
    sequence_id    uuid NOT NULL,
    step_order     integer NOT NULL,
    channel        nurture_channel NOT NULL CHECK (channel IN ('task', 'call_reminder')),
    assignee_id    uuid,
    title          text NOT NULL,
    status         text NOT NULL CHECK (status IN ('open', 'done', 'cancelled')),
    due_at         timestamptz NOT NULL,
    completed_at   timestamptz,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, enrollment_id) REFERENCES lead_nurture_enrollments (tenant_id, id)
);
CREATE INDEX tasks_by_status ON tasks (tenant_id, status, id);
CREATE INDEX tasks_by_enrollment ON tasks (tenant_id, enrollment_id);

CREATE TABLE messages (
    tenant_id        uuid NOT NULL,
    id               uuid NOT NULL,
    enrollment_id    uuid,
    lead_id          uuid NOT NULL,
    sequence_id      uuid,
    step_order       integer,
    to_address       text NOT NULL,
    subject          text NOT NULL,
    body             text NOT NULL,
    html_body        text,
    headers          jsonb NOT NULL,
    status           text NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'unknown')),
    attempts         integer NOT NULL,
    idempotency_key  text NOT NULL,
    created_at       timestamptz NOT NULL,
    sent_at          timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, lead_id) REFERENCES leads (tenant_id, id)
);
-- SPEC section 2: one outbound message per (enrollment, step).
CREATE UNIQUE INDEX messages_one_per_step
    ON messages (tenant_id, enrollment_id, step_order) WHERE enrollment_id IS NOT NULL;
-- The frequency cap reads a lead's recent messages.
CREATE INDEX messages_by_lead ON messages (tenant_id, lead_id, created_at);
CREATE INDEX messages_by_status ON messages (tenant_id, status, id);

CREATE TABLE activities (
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    id             uuid NOT NULL,
    type           text NOT NULL,
    lead_id        uuid NOT NULL,
    enrollment_id  uuid,
    sequence_id    uuid,
    step_order     integer,
    at             timestamptz NOT NULL,
    details        jsonb NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX activities_by_lead ON activities (tenant_id, lead_id, at, id);
CREATE INDEX activities_by_enrollment ON activities (tenant_id, enrollment_id, at, id);
CREATE INDEX activities_by_time ON activities (tenant_id, at, id);

-- Row-level security, FORCEd so that even the tables' owner is subject to it. A row is visible
-- and writable when it belongs to the transaction's tenant, or when the transaction does
-- system work (the scheduler's cross-tenant claim, the sweep's worklist, the API-key lookup).
-- Both settings are transaction-local (set_config(..., true) in Store::begin); a transaction
-- that set neither sees and writes nothing. The settings are read in scalar subqueries so that
-- each is evaluated once per statement (an InitPlan), not once per row.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (id = (SELECT nullif(current_setting('nurture.tenant_id', true), '')::uuid)
           OR (SELECT current_setting('nurture.scope', true)) = 'system')
    WITH CHECK (id = (SELECT nullif(current_setting('nurture.tenant_id', true), '')::uuid)
           OR (SELECT current_setting('nurture.scope', true)) = 'system');

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'users', 'api_keys', 'idempotency_keys', 'leads', 'templates', 'lead_nurture_sequences',
        'lead_nurture_sequence_steps', 'lead_nurture_enrollments', 'approvals', 'tasks', 'messages',
        'activities'
    ] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$
            CREATE POLICY tenant_isolation ON %I
            USING (tenant_id = (SELECT nullif(current_setting('nurture.tenant_id', true), '')::uuid)
                   OR (SELECT current_setting('nurture.scope', true)) = 'system')
            WITH CHECK (tenant_id = (SELECT nullif(current_setting('nurture.tenant_id', true), '')::uuid)
                   OR (SELECT current_setting('nurture.scope', true)) = 'system')
        $p$, t);
    END LOOP;
END
$$;

-- What the application may do: rows only. It owns nothing, so it cannot alter the tables,
-- disable RLS or drop policies. A new table in a later migration needs its own GRANT and policy.
GRANT USAGE ON SCHEMA public TO nurture_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON
    tenants, users, api_keys, idempotency_keys, leads, templates, lead_nurture_sequences,
    lead_nurture_sequence_steps, lead_nurture_enrollments, approvals, tasks, messages, activities
    TO nurture_app;
