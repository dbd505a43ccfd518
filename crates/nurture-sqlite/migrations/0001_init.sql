-- Nurture on SQLite: the first schema. Released migrations are never edited; add a new file.
--
-- Conventions: ids are UUIDs as 16-byte BLOBs (v7, so they sort by creation); instants are INTEGER
-- microseconds since the Unix epoch (UTC); JSON columns hold JSON text; enums are TEXT with a
-- CHECK listing the values. Every table but tenants carries tenant_id in its key.

CREATE TABLE tenants (
    id          BLOB PRIMARY KEY,
    name        TEXT NOT NULL,
    settings    TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE users (
    tenant_id     BLOB NOT NULL REFERENCES tenants (id),
    id            BLOB NOT NULL,
    email         TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'editor', 'approver', 'viewer')),
    password_hash TEXT,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, email)
);

CREATE TABLE api_keys (
    tenant_id   BLOB NOT NULL REFERENCES tenants (id),
    id          BLOB NOT NULL,
    user_id     BLOB NOT NULL,
    prefix      TEXT NOT NULL UNIQUE,
    hash        BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);

CREATE TABLE idempotency_keys (
    tenant_id     BLOB NOT NULL REFERENCES tenants (id),
    key           TEXT NOT NULL,
    request_hash  BLOB NOT NULL,
    status        INTEGER NOT NULL,
    body          BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

CREATE TABLE leads (
    tenant_id             BLOB NOT NULL REFERENCES tenants (id),
    id                    BLOB NOT NULL,
    email                 TEXT NOT NULL,
    first_name            TEXT,
    last_name             TEXT,
    company               TEXT,
    timezone              TEXT,
    status                TEXT NOT NULL CHECK (status IN ('new', 'contacted', 'qualified', 'converted', 'disqualified')),
    score                 INTEGER NOT NULL,
    score_band            TEXT,
    segments              TEXT NOT NULL,
    attributes            TEXT NOT NULL,
    owner_id              BLOB,
    do_not_contact        INTEGER NOT NULL,
    unsubscribed          INTEGER NOT NULL,
    bounced               INTEGER NOT NULL,
    last_reply_at         INTEGER,
    last_reply_sentiment  TEXT,
    last_engaged_at       INTEGER,
    last_outbound_at      INTEGER,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE templates (
    tenant_id     BLOB NOT NULL REFERENCES tenants (id),
    id            TEXT NOT NULL,
    name          TEXT NOT NULL,
    subject       TEXT NOT NULL,
    body          TEXT NOT NULL,
    html_body     TEXT,
    pre_approved  INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE lead_nurture_sequences (
    tenant_id    BLOB NOT NULL REFERENCES tenants (id),
    id           BLOB NOT NULL,
    name         TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('draft', 'active', 'paused', 'archived')),
    entry_rules  TEXT,
    exit_rules   TEXT NOT NULL,
    created_by   BLOB NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 0,
    version      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, created_by) REFERENCES users (tenant_id, id)
);

CREATE TABLE lead_nurture_sequence_steps (
    tenant_id                BLOB NOT NULL,
    sequence_id              BLOB NOT NULL,
    step_order               INTEGER NOT NULL CHECK (step_order >= 1),
    channel                  TEXT NOT NULL CHECK (channel IN ('email', 'task', 'call_reminder', 'wait')),
    delay_hours              INTEGER NOT NULL CHECK (delay_hours >= 0),
    template_id              TEXT,
    requires_human_approval  INTEGER NOT NULL,
    conditions               TEXT,
    PRIMARY KEY (tenant_id, sequence_id, step_order),
    FOREIGN KEY (tenant_id, sequence_id) REFERENCES lead_nurture_sequences (tenant_id, id) ON DELETE CASCADE
);

-- SPEC section 2: step orders of a sequence are 1..N without gaps. Steps are always written
-- in order after the old ones are deleted, so each new step must follow the one before it.
CREATE TRIGGER lead_nurture_sequence_steps_no_gaps
BEFORE INSERT ON lead_nurture_sequence_steps
WHEN NEW.step_order > 1 AND NOT EXISTS (
    SELECT 1 FROM lead_nurture_sequence_steps
    WHERE tenant_id = NEW.tenant_id AND sequence_id = NEW.sequence_id AND step_order = NEW.step_order - 1)
BEGIN
    SELECT RAISE(ABORT, 'step orders must run 1..N without gaps');
END;

CREATE TABLE lead_nurture_enrollments (
    tenant_id             BLOB NOT NULL,
    id                    BLOB NOT NULL,
    lead_id               BLOB NOT NULL,
    sequence_id           BLOB NOT NULL,
    current_step_order    INTEGER NOT NULL CHECK (current_step_order >= 1),
    status                TEXT NOT NULL CHECK (status IN ('active', 'paused', 'completed', 'exited')),
    source                TEXT NOT NULL CHECK (source IN ('manual', 'auto')),
    enrolled_on           INTEGER NOT NULL,
    next_step_on          INTEGER,
    exit_reason           TEXT,
    paused_reason         TEXT CHECK (paused_reason IN ('awaiting_approval', 'awaiting_task', 'manual')),
    approved_approval_id  BLOB,
    claimed_until         INTEGER,
    ended_at              INTEGER,
    updated_at            INTEGER NOT NULL,
    version               INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, lead_id) REFERENCES leads (tenant_id, id),
    FOREIGN KEY (tenant_id, sequence_id) REFERENCES lead_nurture_sequences (tenant_id, id)
);

-- SPEC section 2: at most one active or paused enrollment per lead, across all sequences.
CREATE UNIQUE INDEX lead_nurture_enrollments_one_live_per_lead
    ON lead_nurture_enrollments (tenant_id, lead_id) WHERE status IN ('active', 'paused');
-- The scheduler's pickup order.
CREATE INDEX lead_nurture_enrollments_due
    ON lead_nurture_enrollments (next_step_on) WHERE status = 'active';
-- Cooldown lookups and per-lead lists.
CREATE INDEX lead_nurture_enrollments_by_lead
    ON lead_nurture_enrollments (tenant_id, lead_id, sequence_id, ended_at);
CREATE INDEX lead_nurture_enrollments_by_sequence
    ON lead_nurture_enrollments (tenant_id, sequence_id, status);
CREATE INDEX lead_nurture_enrollments_ended
    ON lead_nurture_enrollments (tenant_id, ended_at) WHERE ended_at IS NOT NULL;

CREATE TABLE approvals (
    tenant_id        BLOB NOT NULL,
    id               BLOB NOT NULL,
    enrollment_id    BLOB NOT NULL,
    lead_id          BLOB NOT NULL,
    sequence_id      BLOB NOT NULL,
    step_order       INTEGER NOT NULL,
    template_id      TEXT,
    subject          TEXT NOT NULL,
    body             TEXT NOT NULL,
    html_body        TEXT,
    author           TEXT NOT NULL CHECK (author IN ('template', 'agent')),
    status           TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'cancelled')),
    decided_by       BLOB,
    decided_at       INTEGER,
    decision_reason  TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, enrollment_id) REFERENCES lead_nurture_enrollments (tenant_id, id)
);
CREATE INDEX approvals_by_status ON approvals (tenant_id, status, id);
CREATE INDEX approvals_by_enrollment ON approvals (tenant_id, enrollment_id);

CREATE TABLE tasks (
    tenant_id      BLOB NOT NULL,
    id             BLOB NOT NULL,
    enrollment_id  BLOB NOT NULL,
    lead_id        BLOB NOT NULL,
    sequence_id    BLOB NOT NULL,
    step_order     INTEGER NOT NULL,
    channel        TEXT NOT NULL CHECK (channel IN ('task', 'call_reminder')),
    assignee_id    BLOB,
    title          TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('open', 'done', 'cancelled')),
    due_at         INTEGER NOT NULL,
    completed_at   INTEGER,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, enrollment_id) REFERENCES lead_nurture_enrollments (tenant_id, id)
);
CREATE INDEX tasks_by_status ON tasks (tenant_id, status, id);
CREATE INDEX tasks_by_enrollment ON tasks (tenant_id, enrollment_id);

CREATE TABLE messages (
    tenant_id        BLOB NOT NULL,
    id               BLOB NOT NULL,
    enrollment_id    BLOB,
    lead_id          BLOB NOT NULL,
    sequence_id      BLOB,
    step_order       INTEGER,
    to_address       TEXT NOT NULL,
    subject          TEXT NOT NULL,
    body             TEXT NOT NULL,
    html_body        TEXT,
    headers          TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'unknown')),
    attempts         INTEGER NOT NULL,
    idempotency_key  TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    sent_at          INTEGER,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, lead_id) REFERENCES leads (tenant_id, id)
) WITHOUT ROWID;
-- The outbox and the log are written several rows per step: WITHOUT ROWID tables keyed by their
-- primary key save one b-tree write per row. A message's idempotency key is derived from
-- (enrollment, step), which the next index keeps unique.
-- SPEC section 2: one outbound message per (enrollment, step).
CREATE UNIQUE INDEX messages_one_per_step
    ON messages (tenant_id, enrollment_id, step_order) WHERE enrollment_id IS NOT NULL;
-- The frequency cap reads a lead's recent messages.
CREATE INDEX messages_by_lead ON messages (tenant_id, lead_id, created_at);
CREATE INDEX messages_by_status ON messages (tenant_id, status, id);

CREATE TABLE activities (
    tenant_id      BLOB NOT NULL,
    id             BLOB NOT NULL,
    type           TEXT NOT NULL,
    lead_id        BLOB NOT NULL,
    enrollment_id  BLOB,
    sequence_id    BLOB,
    step_order     INTEGER,
    at             INTEGER NOT NULL,
    details        TEXT NOT NULL,
    -- Clustered in time order: the tenant's log reads in order without a separate index.
    PRIMARY KEY (tenant_id, at, id)
) WITHOUT ROWID;
-- Also serves the per-enrollment log: an enrollment belongs to one lead, so a query for it
-- names its lead too (a second index would cost a b-tree write per activity).
CREATE INDEX activities_by_lead ON activities (tenant_id, lead_id, at, id);
