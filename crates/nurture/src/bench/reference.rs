//! `nurture bench --reference`: the same step, in raw SQL, on the same database and machine.
//!
//! Issue #2 states its target against a reference ("raw SQL doing one full step, SQLite reaches
//! ~160k steps/s at 1,000 per transaction") measured on another machine with another schema.
//! Machines differ by 2x and more between sessions here, so an absolute figure alone cannot
//! tell engine overhead from a slow box. This round runs, after the engine's two rounds and on
//! the same file, the third email of every enrollment with nothing but prepared statements
//! through rusqlite: the driver-free ceiling of the engine's own schema on this machine.
//!
//! Each step does what a durable engine step does to the database, and nothing else: claim the
//! batch oldest-due first, read the lead, count its recent messages (the frequency cap), insert
//! the message, insert two activities (executed, scheduled), move the enrollment's pointer under
//! its version guard, and stamp the lead's `last_outbound_at`; one `BEGIN IMMEDIATE`
//! transaction per batch. The rendering is a `format!`: the engine's rules, window and template
//! work are exactly what this round leaves out.
//!
//! The enrollment pass has its reference too (`sqlite_enroll_pass`), on a second database built
//! like the first, since the engine's own pass has enrolled every lead of the first.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jiff::{SignedDuration, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

/// What the raw-SQL round measured.
pub struct ReferenceRound {
    pub steps: u64,
    pub seconds: f64,
}

/// Runs every email step due at or before `at` in the SQLite database at `path`, in raw SQL,
/// `batch_size` per transaction.
pub fn sqlite_round(
    path: &Path,
    at: Timestamp,
    batch_size: u32,
    window_hours: i64,
) -> anyhow::Result<ReferenceRound> {
    // Instants are stored as microseconds since the epoch (nurture-sqlite's `ts`).
    let now = at.as_microsecond();
    let since = (at - SignedDuration::from_hours(window_hours)).as_microsecond();
    let next = at + SignedDuration::from_hours(48);
    timed_with_checkpointer(path, |conn| {
        let mut steps = 0u64;
        loop {
            match batch(conn, now, since, next, batch_size)? {
                0 => return Ok(steps),
                n => steps += n,
            }
        }
    })
}

/// The engine's enrollment pass in raw SQL, on a database of leads none of which is enrolled
/// yet: pages of `page` candidate leads in id order (the engine's candidate query: contactable,
/// an entry status, a warm band, no live enrollment), each matched to the sequence of its
/// segment, then one enrollment and one `nurture_enrolled` activity per match; one
/// transaction per page.
pub fn sqlite_enroll_pass(path: &Path, at: Timestamp, page: u32) -> anyhow::Result<ReferenceRound> {
    timed_with_checkpointer(path, |conn| {
        // The bench's one tenant, and segment -> (sequence id, name): its entry rules are
        // `{"segments_any": [segment]}`, one segment per sequence.
        let mut tenant: Option<Vec<u8>> = None;
        let mut by_segment: HashMap<String, (Vec<u8>, String)> = HashMap::new();
        let mut stmt = conn.prepare(
            "SELECT tenant_id, id, name, entry_rules FROM lead_nurture_sequences
             WHERE status = 'active' AND entry_rules IS NOT NULL",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let t: Vec<u8> = r.get(0)?;
            if tenant.get_or_insert_with(|| t.clone()) != &t {
                bail!("the reference pass knows the bench's database only: one tenant");
            }
            let rules: serde_json::Value = serde_json::from_str(&r.get::<_, String>(3)?)?;
            let Some(segment) = rules["segments_any"][0].as_str() else {
                bail!("the reference pass knows the bench's entry rules only: {rules}");
            };
            by_segment.insert(segment.to_string(), (r.get(1)?, r.get(2)?));
        }
        let Some(tenant) = tenant else {
            return Ok(0);
        };
        let mut enrolled = 0u64;
        let mut after: Vec<u8> = Vec::new();
        loop {
            let (n, last) = enroll_page(conn, &tenant, &after, page, at, &by_segment)?;
            enrolled += n;
            match last {
                Some(last) => after = last,
                None => return Ok(enrolled),
            }
        }
    })
}

/// Runs `work` on a connection of its own while a second connection checkpoints the WAL as
/// the engine's store does (PASSIVE, every 200 ms, never inside a commit), and times it.
fn timed_with_checkpointer(
    path: &Path,
    work: impl FnOnce(&Connection) -> anyhow::Result<u64>,
) -> anyhow::Result<ReferenceRound> {
    let conn = open(path)?;
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
    let checkpointer = open(path)?;
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let done = &done;
        scope.spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if let Err(e) = checkpointer.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
                    tracing::warn!(error = %e, "reference round: WAL checkpoint failed");
                }
            }
        });
        let started = Instant::now();
        let result = work(&conn);
        let seconds = started.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
        result.map(|steps| ReferenceRound { steps, seconds })
    })
}

/// One page of the enrollment pass; returns how many it enrolled and the last lead id read
/// (`None` after the last page).
fn enroll_page(
    conn: &Connection,
    tenant: &[u8],
    after: &[u8],
    page: u32,
    at: Timestamp,
    by_segment: &HashMap<String, (Vec<u8>, String)>,
) -> anyhow::Result<(u64, Option<Vec<u8>>)> {
    let now = at.as_microsecond();
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let candidates: Vec<(Vec<u8>, String)> = conn
        .prepare_cached(
            "SELECT l.id, l.segments FROM leads l
             WHERE l.tenant_id = ?1 AND l.id > ?2
               AND l.do_not_contact = 0 AND l.unsubscribed = 0 AND l.bounced = 0
               AND l.status IN ('new', 'contacted', 'qualified') AND l.score_band IN ('warm')
               AND NOT EXISTS (SELECT 1 FROM lead_nurture_enrollments e WHERE e.tenant_id = l.tenant_id
                               AND e.lead_id = l.id AND e.status IN ('active', 'paused'))
             ORDER BY l.id LIMIT ?3",
        )?
        .query_map(params![tenant, after, page], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut insert_enrollment = conn.prepare_cached(
        "INSERT INTO lead_nurture_enrollments (tenant_id, id, lead_id, sequence_id, current_step_order,
           status, source, enrolled_on, next_step_on, exit_reason, paused_reason, approved_approval_id,
           ended_at, updated_at, version)
         VALUES (?1, ?2, ?3, ?4, 1, 'active', 'auto', ?5, ?5, NULL, NULL, NULL, NULL, ?5, 0)",
    )?;
    let mut insert_activity = conn.prepare_cached(
        "INSERT INTO activities (tenant_id, id, type, lead_id, enrollment_id, sequence_id, step_order, at, details)
         VALUES (?1, ?2, 'nurture_enrolled', ?3, ?4, ?5, 1, ?6, ?7)",
    )?;
    let mut enrolled = 0;
    for (lead, segments) in &candidates {
        let segments: Vec<String> = serde_json::from_str(segments)?;
        let Some((sequence, name)) = segments.iter().find_map(|s| by_segment.get(s)) else {
            continue;
        };
        let enrollment = Uuid::now_v7();
        insert_enrollment.execute(params![tenant, enrollment.as_bytes(), lead, sequence, now])?;
        let details = serde_json::json!({
            "source": "auto", "sequence_name": name, "next_step_on": at.to_string(),
        });
        insert_activity.execute(params![
            tenant,
            Uuid::now_v7().as_bytes(),
            lead,
            enrollment.as_bytes(),
            sequence,
            now,
            details.to_string(),
        ])?;
        enrolled += 1;
    }
    conn.execute_batch("COMMIT")?;
    // A short page is the last one.
    let last = if candidates.len() as u32 == page {
        candidates.last().map(|c| c.0.clone())
    } else {
        None
    };
    Ok((enrolled, last))
}

/// A connection with the pragmas the engine's connections use (nurture-sqlite), so that only
/// the code differs.
fn open(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -65536; PRAGMA temp_store = memory; PRAGMA busy_timeout = 30000;",
    )?;
    Ok(conn)
}

/// One claimed enrollment: (tenant, id, lead, sequence, step, version).
type Claimed = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, i64, i64);

fn batch(
    conn: &Connection,
    now: i64,
    since: i64,
    next: Timestamp,
    limit: u32,
) -> anyhow::Result<u64> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let claimed: Vec<Claimed> = conn
        .prepare_cached(
            "SELECT e.tenant_id, e.id, e.lead_id, e.sequence_id, e.current_step_order, e.version
             FROM lead_nurture_enrollments e
             WHERE e.status = 'active' AND e.next_step_on <= ?1
               AND EXISTS (SELECT 1 FROM lead_nurture_sequences s
                           WHERE s.tenant_id = e.tenant_id AND s.id = e.sequence_id AND s.status = 'active')
             ORDER BY e.next_step_on LIMIT ?2",
        )?
        .query_map(params![now, limit], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut get_lead = conn.prepare_cached(
        "SELECT email, first_name, company, status, do_not_contact, unsubscribed, bounced
         FROM leads WHERE tenant_id = ?1 AND id = ?2",
    )?;
    let mut count_sent = conn.prepare_cached(
        "SELECT count(*) FROM messages WHERE tenant_id = ?1 AND lead_id = ?2 AND created_at > ?3",
    )?;
    let mut insert_message = conn.prepare_cached(
        "INSERT INTO messages (tenant_id, id, enrollment_id, lead_id, sequence_id, step_order, to_address,
           subject, body, html_body, headers, status, attempts, idempotency_key, created_at, sent_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, '{}', 'queued', 0, ?10, ?11, NULL)",
    )?;
    let mut insert_activity = conn.prepare_cached(
        "INSERT INTO activities (tenant_id, id, type, lead_id, enrollment_id, sequence_id, step_order, at, details)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut move_pointer = conn.prepare_cached(
        "UPDATE lead_nurture_enrollments SET current_step_order = ?3, next_step_on = ?4,
           updated_at = ?5, version = ?6
         WHERE tenant_id = ?1 AND id = ?2 AND version = ?7 AND status = 'active' AND paused_reason IS NULL",
    )?;
    let mut touch_lead = conn.prepare_cached(
        "UPDATE leads SET last_outbound_at = max(coalesce(last_outbound_at, ?3), ?3)
         WHERE tenant_id = ?1 AND id = ?2",
    )?;
    for (tenant, enrollment, lead, sequence, step, version) in &claimed {
        let Some((email, first_name, company, _status, dnc, unsub, bounced)) = get_lead
            .query_row(params![tenant, lead], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, bool>(5)?,
                    r.get::<_, bool>(6)?,
                ))
            })
            .optional()?
        else {
            bail!("enrollment refers to a missing lead");
        };
        let sent: i64 = count_sent.query_row(params![tenant, lead, since], |r| r.get(0))?;
        if dnc || unsub || bounced || sent > 0 {
            bail!("the reference round expects every claimed lead to be sendable");
        }
        let first = first_name.unwrap_or_default();
        let company = company.unwrap_or_default();
        let message_id = Uuid::now_v7();
        let key = format!("{}:{step}", Uuid::from_slice(enrollment)?.simple());
        insert_message.execute(params![
            tenant,
            message_id.as_bytes(),
            enrollment,
            lead,
            sequence,
            step,
            email,
            format!("{first}, one more idea for {company}"),
            format!("Hi {first},\n\nHere is something for {company}.\n\nBest"),
            key,
            now,
        ])?;
        let executed = format!(r#"{{"channel":"email","message_id":"{message_id}"}}"#);
        let scheduled = format!(r#"{{"next_step_on":"{next}","delay_hours":48}}"#);
        for (kind, details) in [
            ("nurture_step_executed", executed),
            ("nurture_step_scheduled", scheduled),
        ] {
            insert_activity.execute(params![
                tenant,
                Uuid::now_v7().as_bytes(),
                kind,
                lead,
                enrollment,
                sequence,
                step,
                now,
                details,
            ])?;
        }
        let moved = move_pointer.execute(params![
            tenant,
            enrollment,
            step + 1,
            next.as_microsecond(),
            now,
            version + 1,
            version
        ])?;
        if moved != 1 {
            bail!("an enrollment changed under the reference round");
        }
        touch_lead.execute(params![tenant, lead, now])?;
    }
    conn.execute_batch("COMMIT")?;
    Ok(claimed.len() as u64)
}
