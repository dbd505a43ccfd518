//! `nurture bench --backend postgres --reference`: the same step with no client at all, on the
//! same database and server.
//!
//! Issue #4 states its target against raw SQL measured on another machine ("~46k steps/s at
//! 1,000 per transaction"). As on SQLite (`reference.rs`), a figure is read against the ceiling
//! of the engine's own schema on the machine at hand. Here the ceiling is one statement per
//! batch that does the whole step inside the server: claim (oldest due first, active sequences
//! only, `FOR UPDATE SKIP LOCKED`), read the lead, count its recent messages (the frequency
//! cap), insert the message, insert two activities (executed, scheduled), move the enrollment's
//! pointer under its version guard, stamp the lead's `last_outbound_at`. Nothing crosses the
//! wire but the batch's new ids and five counts; no row is decoded or encoded by a client. It
//! runs as the application role under row-level security with the system scope, with the
//! engine's plan settings, on as many connections at once as the engine's batches may run.

use anyhow::{Context, bail};
use jiff::{SignedDuration, Timestamp};
use nurture_postgres::Ts;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use std::time::Instant;
use uuid::Uuid;

use super::reference::ReferenceRound;

/// The whole step for up to `$2` due enrollments, after the engine's own claim
/// ([`nurture_postgres::CLAIM_DUE`]): `$1` is the instant the steps run at (also their due
/// limit), `$4` the start of the cap's window, `$5` when the next step falls due. `$3` holds
/// three fresh ids per claimed row (message, two activities): row n takes 3n-2, 3n-1 and 3n.
fn step_statement() -> String {
    format!(
        "WITH claimed AS MATERIALIZED (
    SELECT e.tenant_id, e.id, e.lead_id, e.sequence_id, e.current_step_order AS step, e.version
    {CLAIM_DUE}
),
{STEP_AFTER_CLAIM}",
        CLAIM_DUE = nurture_postgres::CLAIM_DUE
    )
}

/// Everything of the step after the claim.
const STEP_AFTER_CLAIM: &str = "
step AS MATERIALIZED (
    SELECT c.*, row_number() OVER () AS n, l.email,
           coalesce(l.first_name, '') AS first_name, coalesce(l.company, '') AS company,
           l.do_not_contact OR l.unsubscribed OR l.bounced AS blocked,
           (SELECT count(*) FROM messages m
            WHERE m.tenant_id = c.tenant_id AND m.lead_id = c.lead_id AND m.created_at > $4) AS sent
    FROM claimed c JOIN leads l ON l.tenant_id = c.tenant_id AND l.id = c.lead_id
),
message AS (
    INSERT INTO messages (tenant_id, id, enrollment_id, lead_id, sequence_id, step_order, to_address,
                          subject, body, html_body, headers, status, attempts, idempotency_key,
                          created_at, sent_at)
    SELECT s.tenant_id, $3[(3 * s.n - 2)::int], s.id, s.lead_id, s.sequence_id, s.step, s.email,
           s.first_name || ', one more idea for ' || s.company,
           'Hi ' || s.first_name || E',\\n\\nHere is something for ' || s.company || E'.\\n\\nBest',
           NULL, '{}', 'queued', 0, s.id::text || '-' || s.step, $1, NULL
    FROM step s WHERE NOT s.blocked AND s.sent = 0
    RETURNING 1
),
activity AS (
    INSERT INTO activities (tenant_id, id, type, lead_id, enrollment_id, sequence_id, step_order, at, details)
    SELECT s.tenant_id, $3[(3 * s.n - 1)::int], 'nurture_step_executed', s.lead_id, s.id, s.sequence_id, s.step, $1,
           jsonb_build_object('channel', 'email', 'message_id', $3[(3 * s.n - 2)::int])
    FROM step s
    UNION ALL
    SELECT s.tenant_id, $3[(3 * s.n)::int], 'nurture_step_scheduled', s.lead_id, s.id, s.sequence_id, s.step, $1,
           jsonb_build_object('next_step_on', $5, 'delay_hours', 48)
    FROM step s
    RETURNING 1
),
moved AS (
    UPDATE lead_nurture_enrollments e
    SET current_step_order = s.step + 1, next_step_on = $5, updated_at = $1, version = s.version + 1
    FROM step s
    WHERE e.tenant_id = s.tenant_id AND e.id = s.id AND e.lead_id = s.lead_id AND e.version = s.version
      AND e.status = 'active' AND e.paused_reason IS NULL
    RETURNING 1
),
stamped AS (
    UPDATE leads l SET last_outbound_at = greatest(coalesce(l.last_outbound_at, $1), $1), updated_at = $1
    FROM step s WHERE l.tenant_id = s.tenant_id AND l.id = s.lead_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM step), (SELECT count(*) FROM message), (SELECT count(*) FROM activity),
       (SELECT count(*) FROM moved), (SELECT count(*) FROM stamped)";

/// Runs every email step due at or before `at` on the database `options` names, `batch_size`
/// per transaction, on `connections` connections at once; fails if any step could not do all
/// of its work (the bench's leads are all sendable when their third email falls due).
pub async fn postgres_round(
    options: &PgConnectOptions,
    at: Timestamp,
    batch_size: u32,
    window_hours: i64,
    connections: u32,
) -> anyhow::Result<ReferenceRound> {
    let since = at - SignedDuration::from_hours(window_hours);
    let statement = step_statement();
    let next = at + SignedDuration::from_hours(48);
    let mut conns = Vec::new();
    for _ in 0..connections.max(1) {
        let mut conn = PgConnection::connect_with(options)
            .await
            .context("connecting for the reference round")?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET ROLE {}",
            nurture_postgres::APP_ROLE
        )))
        .execute(&mut conn)
        .await?;
        conns.push(conn);
    }
    let started = Instant::now();
    let runs: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let statement = statement.clone();
            tokio::spawn(async move {
                let mut steps = 0u64;
                loop {
                    match batch(&mut conn, &statement, at, since, next, batch_size).await? {
                        0 => return anyhow::Ok(steps),
                        n => steps += n,
                    }
                }
            })
        })
        .collect();
    let mut steps = 0;
    for run in runs {
        steps += run.await??;
    }
    Ok(ReferenceRound {
        steps,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One transaction: the system scope and the engine's plan settings, then the whole step.
async fn batch(
    conn: &mut PgConnection,
    statement: &str,
    now: Timestamp,
    since: Timestamp,
    next: Timestamp,
    limit: u32,
) -> anyhow::Result<u64> {
    let mut tx = conn.begin().await?;
    sqlx::raw_sql(
        "SELECT set_config('nurture.scope', 'system', true);
         SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;
         SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off",
    )
    .execute(&mut *tx)
    .await?;
    let ids: Vec<Uuid> = (0..3 * limit).map(|_| Uuid::now_v7()).collect();
    let (steps, messages, activities, moved, stamped): (i64, i64, i64, i64, i64) =
        sqlx::query_as(sqlx::AssertSqlSafe(statement))
            .bind(Ts(now))
            .bind(limit as i64)
            .bind(&ids)
            .bind(Ts(since))
            .bind(Ts(next))
            .fetch_one(&mut *tx)
            .await
            .context("the reference step")?;
    if (messages, activities, moved, stamped) != (steps, 2 * steps, steps, steps) {
        bail!(
            "the reference round expects every claimed step to do all its work: {steps} claimed, \
             {messages} messages, {activities} activities, {moved} moved, {stamped} leads stamped"
        );
    }
    tx.commit().await?;
    Ok(steps as u64)
}
