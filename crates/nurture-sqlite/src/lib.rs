//! Nurture's storage on an embedded SQLite file (WAL): the default that needs nothing else.
//!
//! Every transaction that may write starts with `BEGIN IMMEDIATE`: SQLite has one writer, and
//! taking the write lock up front means a transaction never fails half-way on a lock upgrade.
//! The write lock is also what makes a scheduler claim exclusive on this backend.

mod rows;

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use nurture_core::domain::*;
use nurture_core::error::{Error, Result};
use nurture_core::settings::TenantSettings;
use nurture_core::store::*;
use rows::*;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// SQLite allows 32766 bound parameters per statement; multi-row statements stay under this.
const MAX_PARAMS: usize = 30_000;

pub struct SqliteStore {
    pool: SqlitePool,
    checkpointer: tokio::task::JoinHandle<()>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.checkpointer.abort();
    }
}

/// Copies the WAL back into the database file every 200 ms with a PASSIVE checkpoint, which
/// never blocks writers. Left to SQLite's automatic checkpoint, that work would happen inside
/// whichever commit crossed the threshold, stalling a scheduler batch; here it overlaps with
/// the next batch on another core. Failures are logged and retried on the next tick.
async fn checkpoint_loop(pool: SqlitePool) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
}

fn db(e: sqlx::Error) -> Error {
    if let sqlx::Error::Database(d) = &e {
        let msg = d.message();
        if msg.contains("lead_nurture_enrollments.tenant_id, lead_nurture_enrollments.lead_id") {
            return Error::conflict("the lead already has an active or paused enrollment");
        }
        if msg.contains("step orders must run") {
            return Error::invalid("steps", "step orders must run 1..N without gaps");
        }
    }
    Error::store(e)
}

impl SqliteStore {
    /// Opens (creating if missing) the database named by a `sqlite://PATH` URL.
    pub async fn connect(url: &str) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::invalid("database", format!("{url:?} is not a SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            // Rows cross from SQLite's worker thread in a bounded channel; at the default of 50 a
            // batch of 1,000 rows meant twenty thread hand-offs per query.
            .row_buffer_size(8192)
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory")
            // Checkpoints run on their own connection (below), not inside a writer's commit.
            .pragma("wal_autocheckpoint", "0");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| Error::store(format!("cannot open {url}: {e}")))?;
        let checkpointer = tokio::spawn(checkpoint_loop(pool.clone()));
        Ok(SqliteStore { pool, checkpointer })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| Error::store(format!("migration failed: {e}")))
    }

    async fn begin(&self, _scope: Scope) -> Result<Box<dyn Tx>> {
        // IMMEDIATE: the write lock is taken now, so a read-then-write transaction never fails
        // at its first write because another connection wrote in between.
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        Ok(Box::new(SqliteTx { tx }))
    }

    async fn begin_read(&self, _scope: Scope) -> Result<Box<dyn Tx>> {
        // Deferred: a WAL snapshot from the first read, beside whichever connection writes.
        let tx = self.pool.begin_with("BEGIN").await.map_err(db)?;
        Ok(Box::new(SqliteTx { tx }))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}

/// The rows of [`SqliteTx::write_enrollment_rows`], as a table (a macro so that `concat!` can
/// splice it into both statements).
macro_rules! enrollment_update_rows {
    () => {
        "(SELECT unhex(value ->> 0) AS tenant_id, unhex(value ->> 1) AS id,
        value ->> 2 AS expected, value ->> 3 AS current_step_order, value ->> 4 AS status,
        value ->> 5 AS next_step_on, value ->> 6 AS exit_reason, value ->> 7 AS paused_reason,
        unhex(value ->> 8) AS approved_approval_id, value ->> 9 AS ended_at,
        value ->> 10 AS updated_at, value ->> 11 AS version
      FROM json_each(?)) AS v"
    };
}

/// Moves an active enrollment's pointer: only `lead_nurture_enrollments_due` changes.
const MOVE_ENROLLMENTS: &str = concat!(
    "UPDATE lead_nurture_enrollments AS e SET current_step_order = v.current_step_order,
        next_step_on = v.next_step_on, approved_approval_id = v.approved_approval_id,
        updated_at = v.updated_at, version = v.version
     FROM ",
    enrollment_update_rows!(),
    " WHERE e.tenant_id = v.tenant_id AND e.id = v.id AND e.version = v.expected
        AND e.status = 'active' AND e.paused_reason IS NULL"
);

/// Writes every mutable column of an enrollment.
const UPDATE_ENROLLMENTS: &str = concat!(
    "UPDATE lead_nurture_enrollments AS e SET current_step_order = v.current_step_order,
        status = v.status, next_step_on = v.next_step_on, exit_reason = v.exit_reason,
        paused_reason = v.paused_reason, approved_approval_id = v.approved_approval_id,
        ended_at = v.ended_at, updated_at = v.updated_at, version = v.version
     FROM ",
    enrollment_update_rows!(),
    " WHERE e.tenant_id = v.tenant_id AND e.id = v.id AND e.version = v.expected"
);

pub struct SqliteTx {
    tx: Transaction<'static, Sqlite>,
}

/// A JSON array of [tenant, id] pairs, for `json_each` joins.
fn pairs_json(keys: &[(Uuid, Uuid)]) -> String {
    let v: Vec<[String; 2]> = keys.iter().map(|(t, i)| [hex_id(*t), hex_id(*i)]).collect();
    serde_json::to_string(&v).expect("strings serialize")
}

/// How many rows of `columns` columns fit in one statement.
fn rows_per_statement(columns: usize) -> usize {
    (MAX_PARAMS / columns).max(1)
}

/// Splits a fetched page (`limit + 1` rows) into items and the next key.
fn page_of<T>(mut items: Vec<T>, page: &Page, key: impl Fn(&T) -> String) -> Listed<T> {
    let limit = page.limit.max(1) as usize;
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(&key)
    } else {
        None
    };
    Listed { items, next }
}

fn bad_cursor() -> Error {
    Error::invalid("cursor", "not a cursor this list handed out")
}

/// An id-ordered list's key.
fn id_after(page: &Page) -> Result<Option<Uuid>> {
    page.after
        .as_deref()
        .map(|a| Uuid::parse_str(a).map_err(|_| bad_cursor()))
        .transpose()
}

impl SqliteTx {
    fn conn(&mut self) -> &mut sqlx::SqliteConnection {
        &mut self.tx
    }

    async fn fetch_all(
        &mut self,
        qb: &mut QueryBuilder<Sqlite>,
    ) -> Result<Vec<sqlx::sqlite::SqliteRow>> {
        qb.build().fetch_all(&mut *self.tx).await.map_err(db)
    }

    /// Finishes an id-ordered list query: the page's key (`AND id > cursor`), the order and
    /// one row more than the page (to know whether another follows), then maps the rows.
    async fn id_page<T>(
        &mut self,
        qb: &mut QueryBuilder<Sqlite>,
        page: &Page,
        map: fn(&sqlx::sqlite::SqliteRow) -> Result<T>,
        key: fn(&T) -> Uuid,
    ) -> Result<Listed<T>> {
        if let Some(after) = id_after(page)? {
            qb.push(" AND id > ").push_bind(after);
        }
        qb.push(" ORDER BY id LIMIT ")
            .push_bind(page.limit as i64 + 1);
        let rows = self.fetch_all(qb).await?;
        let items = rows.iter().map(map).collect::<Result<Vec<_>>>()?;
        Ok(page_of(items, page, |t| key(t).hyphenated().to_string()))
    }

    async fn steps_for(&mut self, seqs: &mut [Sequence]) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let keys: Vec<(Uuid, Uuid)> = seqs.iter().map(|s| (s.tenant_id, s.id)).collect();
        let rows = sqlx::query(
            "SELECT s.* FROM json_each(?) j JOIN lead_nurture_sequence_steps s
               ON s.tenant_id = unhex(j.value ->> 0) AND s.sequence_id = unhex(j.value ->> 1)
             ORDER BY s.sequence_id, s.step_order",
        )
        .bind(pairs_json(&keys))
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        let mut by_seq: HashMap<Uuid, Vec<Step>> = HashMap::new();
        for r in &rows {
            let (seq, st) = step(r)?;
            by_seq.entry(seq).or_default().push(st);
        }
        for s in seqs.iter_mut() {
            s.steps = by_seq.remove(&s.id).unwrap_or_default();
        }
        Ok(())
    }

    async fn write_steps(&mut self, s: &Sequence) -> Result<()> {
        sqlx::query(
            "DELETE FROM lead_nurture_sequence_steps WHERE tenant_id = ? AND sequence_id = ?",
        )
        .bind(id(s.tenant_id))
        .bind(id(s.id))
        .execute(self.conn())
        .await
        .map_err(db)?;
        for st in &s.steps {
            sqlx::query(
                "INSERT INTO lead_nurture_sequence_steps (tenant_id, sequence_id, step_order, channel, delay_hours,
                   template_id, requires_human_approval, conditions) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(id(s.tenant_id))
            .bind(id(s.id))
            .bind(st.step_order.get())
            .bind(st.channel.as_str())
            .bind(st.delay_hours.get())
            .bind(st.template_id.as_ref().map(|t| t.as_str().to_string()))
            .bind(st.requires_human_approval)
            .bind(st.conditions.as_ref().map(|c| c.to_json().to_string()))
            .execute(self.conn())
            .await
            .map_err(db)?;
        }
        Ok(())
    }

    async fn insert_enrollments(&mut self, es: &[Enrollment]) -> Result<()> {
        for chunk in es.chunks(rows_per_statement(15)) {
            let mut qb = QueryBuilder::<Sqlite>::new(format!(
                "INSERT INTO lead_nurture_enrollments ({ENROLLMENT_COLUMNS}) "
            ));
            qb.push_values(chunk, |mut b, e| {
                b.push_bind(id(e.tenant_id))
                    .push_bind(id(e.id))
                    .push_bind(id(e.lead_id))
                    .push_bind(id(e.sequence_id))
                    .push_bind(e.current_step_order.get())
                    .push_bind(e.status.as_str())
                    .push_bind(e.source.as_str())
                    .push_bind(ts(e.enrolled_on))
                    .push_bind(opt_ts(e.next_step_on))
                    .push_bind(e.exit_reason.clone())
                    .push_bind(e.paused_reason.map(|p| p.as_str()))
                    .push_bind(opt_id(e.approved_approval_id))
                    .push_bind(opt_ts(e.ended_at))
                    .push_bind(ts(e.updated_at))
                    .push_bind(e.version);
            });
            qb.build().execute(self.conn()).await.map_err(db)?;
        }
        Ok(())
    }

    async fn update_enrollments(&mut self, updates: &[EnrollmentUpdate]) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        // Most scheduler outcomes only move an active enrollment's pointer. SQLite rewrites every
        // index that names a column in the SET list, whatever the values, so those rows go
        // through a statement that sets only the pointer columns (one index touched instead of
        // five; a batch's writes went from ~23 to ~20 ms per 1,000 in the bench, where this
        // update alone had taken 9.4 ms). Its guard lets only rows that were already
        // active and unpaused through; anything else goes through the full statement.
        let (moves, others): (Vec<&EnrollmentUpdate>, Vec<&EnrollmentUpdate>) =
            updates.iter().partition(|u| {
                let e = &u.enrollment;
                e.status == EnrollmentStatus::Active
                    && e.paused_reason.is_none()
                    && e.exit_reason.is_none()
                    && e.ended_at.is_none()
            });
        let mut done = 0;
        let mut rest = others;
        if !moves.is_empty() {
            let moved = self.write_enrollment_rows(&moves, MOVE_ENROLLMENTS).await?;
            done += moved;
            if moved != moves.len() as u64 {
                // Some were paused before (a resume): the full statement finds them, and skips
                // the moved ones by their new version.
                rest.extend(moves);
            }
        }
        if !rest.is_empty() {
            done += self
                .write_enrollment_rows(&rest, UPDATE_ENROLLMENTS)
                .await?;
        }
        // Someone else wrote one of these enrollments since it was read: write nothing.
        all_updated(done, updates.len())
    }

    /// Runs one of the enrollment update statements over `updates`, passed as one JSON array:
    /// `UPDATE … FROM json_each` looks each enrollment up by its key, where the same join over a
    /// 1,000-row VALUES list was planned as a scan (33 ms instead of 2 ms per batch at 400k
    /// rows, measured with the bench). Returns how many rows it changed.
    async fn write_enrollment_rows(
        &mut self,
        updates: &[&EnrollmentUpdate],
        sql: &'static str,
    ) -> Result<u64> {
        let rows: Vec<serde_json::Value> = updates
            .iter()
            .map(|u| {
                let e = &u.enrollment;
                serde_json::json!([
                    hex_id(e.tenant_id),
                    hex_id(e.id),
                    u.expected_version,
                    e.current_step_order.get(),
                    e.status.as_str(),
                    opt_ts(e.next_step_on),
                    e.exit_reason,
                    e.paused_reason.map(|p| p.as_str()),
                    e.approved_approval_id.map(hex_id),
                    opt_ts(e.ended_at),
                    ts(e.updated_at),
                    e.version,
                ])
            })
            .collect();
        Ok(sqlx::query(sql)
            .bind(serde_json::Value::Array(rows).to_string())
            .execute(self.conn())
            .await
            .map_err(db)?
            .rows_affected())
    }

    async fn insert_messages(&mut self, ms: &[Message]) -> Result<()> {
        for chunk in ms.chunks(rows_per_statement(16)) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO messages (tenant_id, id, enrollment_id, lead_id, sequence_id, step_order, to_address, subject,
                   body, html_body, headers, status, attempts, idempotency_key, created_at, sent_at) ",
            );
            qb.push_values(chunk, |mut b, m| {
                b.push_bind(id(m.tenant_id))
                    .push_bind(id(m.id))
                    .push_bind(opt_id(m.enrollment_id))
                    .push_bind(id(m.lead_id))
                    .push_bind(opt_id(m.sequence_id))
                    .push_bind(m.step_order.map(|s| s.get()))
                    .push_bind(m.to.clone())
                    .push_bind(m.subject.clone())
                    .push_bind(m.body.clone())
                    .push_bind(m.html_body.clone())
                    .push_bind(serde_json::Value::Object(m.headers.clone()).to_string())
                    .push_bind(m.status.as_str())
                    .push_bind(m.attempts)
                    .push_bind(m.idempotency_key.clone())
                    .push_bind(ts(m.created_at))
                    .push_bind(opt_ts(m.sent_at));
            });
            qb.build().execute(self.conn()).await.map_err(db)?;
        }
        Ok(())
    }

    async fn insert_activities(&mut self, acts: &[Activity]) -> Result<()> {
        for chunk in acts.chunks(rows_per_statement(9)) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO activities (tenant_id, id, type, lead_id, enrollment_id, sequence_id, step_order, at, details) ",
            );
            qb.push_values(chunk, |mut b, a| {
                b.push_bind(id(a.tenant_id))
                    .push_bind(id(a.id))
                    .push_bind(a.activity_type.as_str())
                    .push_bind(id(a.lead_id))
                    .push_bind(opt_id(a.enrollment_id))
                    .push_bind(opt_id(a.sequence_id))
                    .push_bind(a.step_order.map(|s| s.get()))
                    .push_bind(ts(a.at))
                    .push_bind(a.details.to_string());
            });
            qb.build().execute(self.conn()).await.map_err(db)?;
        }
        Ok(())
    }

    async fn upsert_tasks(&mut self, tasks: &[Task]) -> Result<()> {
        for chunk in tasks.chunks(rows_per_statement(13)) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO tasks (tenant_id, id, enrollment_id, lead_id, sequence_id, step_order, channel, assignee_id,
                   title, status, due_at, completed_at, created_at) ",
            );
            qb.push_values(chunk, |mut b, t| {
                b.push_bind(id(t.tenant_id))
                    .push_bind(id(t.id))
                    .push_bind(id(t.enrollment_id))
                    .push_bind(id(t.lead_id))
                    .push_bind(id(t.sequence_id))
                    .push_bind(t.step_order.get())
                    .push_bind(t.channel.as_str())
                    .push_bind(opt_id(t.assignee_id))
                    .push_bind(t.title.clone())
                    .push_bind(t.status.as_str())
                    .push_bind(ts(t.due_at))
                    .push_bind(opt_ts(t.completed_at))
                    .push_bind(ts(t.created_at));
            });
            qb.push(
                " ON CONFLICT (tenant_id, id) DO UPDATE SET status = excluded.status, completed_at = excluded.completed_at,
                  assignee_id = excluded.assignee_id, title = excluded.title",
            );
            qb.build().execute(self.conn()).await.map_err(db)?;
        }
        Ok(())
    }

    async fn upsert_approvals(&mut self, approvals: &[Approval]) -> Result<()> {
        for chunk in approvals.chunks(rows_per_statement(17)) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO approvals (tenant_id, id, enrollment_id, lead_id, sequence_id, step_order, template_id, subject,
                   body, html_body, author, status, decided_by, decided_at, decision_reason, created_at, updated_at) ",
            );
            qb.push_values(chunk, |mut b, a| {
                b.push_bind(id(a.tenant_id))
                    .push_bind(id(a.id))
                    .push_bind(id(a.enrollment_id))
                    .push_bind(id(a.lead_id))
                    .push_bind(id(a.sequence_id))
                    .push_bind(a.step_order.get())
                    .push_bind(a.template_id.as_ref().map(|t| t.as_str().to_string()))
                    .push_bind(a.subject.clone())
                    .push_bind(a.body.clone())
                    .push_bind(a.html_body.clone())
                    .push_bind(a.author.as_str())
                    .push_bind(a.status.as_str())
                    .push_bind(opt_id(a.decided_by))
                    .push_bind(opt_ts(a.decided_at))
                    .push_bind(a.decision_reason.clone())
                    .push_bind(ts(a.created_at))
                    .push_bind(ts(a.updated_at));
            });
            qb.push(
                " ON CONFLICT (tenant_id, id) DO UPDATE SET subject = excluded.subject, body = excluded.body,
                  html_body = excluded.html_body, author = excluded.author, status = excluded.status,
                  decided_by = excluded.decided_by, decided_at = excluded.decided_at,
                  decision_reason = excluded.decision_reason, updated_at = excluded.updated_at",
            );
            qb.build().execute(self.conn()).await.map_err(db)?;
        }
        Ok(())
    }

    async fn touch_outbound(&mut self, touches: &[(TenantId, LeadId, Timestamp)]) -> Result<()> {
        if touches.is_empty() {
            return Ok(());
        }
        // One JSON array, joined by key (see `update_enrollments` for why not a VALUES list).
        let rows: Vec<serde_json::Value> = touches
            .iter()
            .map(|(t, l, at)| serde_json::json!([hex_id(*t), hex_id(*l), ts(*at)]))
            .collect();
        sqlx::query(
            "UPDATE leads AS l SET last_outbound_at = max(coalesce(l.last_outbound_at, v.at), v.at)
             FROM (SELECT unhex(value ->> 0) AS tenant_id, unhex(value ->> 1) AS id, max(value ->> 2) AS at
                   FROM json_each(?) GROUP BY 1, 2) AS v
             WHERE l.tenant_id = v.tenant_id AND l.id = v.id",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .execute(self.conn())
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn write_lead(&mut self, lead: &Lead, insert: bool) -> Result<()> {
        let sql = if insert {
            format!(
                "INSERT INTO leads ({LEAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            )
        } else {
            "UPDATE leads SET tenant_id = ?1, id = ?2, email = ?3, first_name = ?4, last_name = ?5, company = ?6,
               timezone = ?7, status = ?8, score = ?9, score_band = ?10, segments = ?11, attributes = ?12,
               owner_id = ?13, do_not_contact = ?14, unsubscribed = ?15, bounced = ?16, last_reply_at = ?17,
               last_reply_sentiment = ?18, last_engaged_at = ?19, last_outbound_at = ?20, created_at = ?21,
               updated_at = ?22
             WHERE tenant_id = ?1 AND id = ?2"
                .to_string()
        };
        let result = bind_lead(sqlx::query(AssertSqlSafe(sql)), lead)
            .execute(self.conn())
            .await;
        match result {
            Err(sqlx::Error::Database(d)) if insert && d.is_unique_violation() => {
                Err(Error::Conflict {
                    message: format!("a lead with id {} exists", lead.id),
                    conflicting: Some(serde_json::json!({ "lead_id": lead.id })),
                })
            }
            other => other.map(|_| ()).map_err(db),
        }
    }
}

fn bind_lead<'q>(
    q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    l: &Lead,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
    q.bind(id(l.tenant_id))
        .bind(id(l.id))
        .bind(l.email.as_str().to_string())
        .bind(l.first_name.clone())
        .bind(l.last_name.clone())
        .bind(l.company.clone())
        .bind(l.timezone.as_ref().map(|t| t.as_str().to_string()))
        .bind(l.status.as_str())
        .bind(l.score)
        .bind(l.score_band.clone())
        .bind(serde_json::to_string(&l.segments).expect("strings serialize"))
        .bind(serde_json::Value::Object(l.attributes.clone()).to_string())
        .bind(opt_id(l.owner_id))
        .bind(l.do_not_contact)
        .bind(l.unsubscribed)
        .bind(l.bounced)
        .bind(opt_ts(l.last_reply_at))
        .bind(l.last_reply_sentiment.map(|s| s.as_str()))
        .bind(opt_ts(l.last_engaged_at))
        .bind(opt_ts(l.last_outbound_at))
        .bind(ts(l.created_at))
        .bind(ts(l.updated_at))
}

#[async_trait]
impl Tx for SqliteTx {
    async fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit().await.map_err(db)
    }

    async fn insert_tenant(&mut self, t: &Tenant) -> Result<()> {
        sqlx::query("INSERT INTO tenants (id, name, settings, created_at) VALUES (?, ?, ?, ?)")
            .bind(id(t.id))
            .bind(&t.name)
            .bind(serde_json::to_string(&t.settings).map_err(Error::store)?)
            .bind(ts(t.created_at))
            .execute(self.conn())
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn get_tenant(&mut self, tenant_id: TenantId) -> Result<Option<Tenant>> {
        let row = sqlx::query("SELECT * FROM tenants WHERE id = ?")
            .bind(id(tenant_id))
            .fetch_optional(self.conn())
            .await
            .map_err(db)?;
        row.as_ref().map(tenant).transpose()
    }

    async fn update_tenant_settings(
        &mut self,
        tenant_id: TenantId,
        settings: &TenantSettings,
    ) -> Result<()> {
        sqlx::query("UPDATE tenants SET settings = ? WHERE id = ?")
            .bind(serde_json::to_string(settings).map_err(Error::store)?)
            .bind(id(tenant_id))
            .execute(self.conn())
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn insert_user(&mut self, u: &User) -> Result<()> {
        sqlx::query("INSERT INTO users (tenant_id, id, email, role, password_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(id(u.tenant_id))
            .bind(id(u.id))
            .bind(&u.email)
            .bind(u.role.as_str())
            .bind(&u.password_hash)
            .bind(ts(u.created_at))
            .execute(self.conn())
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn insert_api_key(&mut self, k: &ApiKeyRecord) -> Result<()> {
        sqlx::query("INSERT INTO api_keys (tenant_id, id, user_id, prefix, hash, created_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(id(k.tenant_id))
            .bind(id(k.id))
            .bind(id(k.user_id))
            .bind(&k.prefix)
            .bind(&k.hash)
            .bind(ts(k.created_at))
            .execute(self.conn())
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn find_api_key(&mut self, prefix: &str) -> Result<Option<ApiKeyRecord>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE prefix = ?")
            .bind(prefix)
            .fetch_optional(self.conn())
            .await
            .map_err(db)?;
        row.as_ref().map(api_key).transpose()
    }

    async fn insert_idempotency_key(
        &mut self,
        tenant: TenantId,
        key: &str,
        request_hash: &[u8],
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<bool> {
        // Status 0 and no body: reserved, not answered yet.
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (tenant_id, key, request_hash, status, body, created_at, locked_until)
             VALUES (?, ?, ?, 0, x'', ?, ?) ON CONFLICT (tenant_id, key) DO NOTHING",
        )
        .bind(id(tenant))
        .bind(key)
        .bind(request_hash)
        .bind(ts(now))
        .bind(ts(lease_until))
        .execute(self.conn())
        .await
        .map_err(db)?
        .rows_affected();
        Ok(inserted == 1)
    }
    async fn get_idempotency_key(
        &mut self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<IdempotencyKey>> {
        let row = sqlx::query(
            "SELECT request_hash, status, body, locked_until FROM idempotency_keys WHERE tenant_id = ? AND key = ?",
        )
        .bind(id(tenant))
        .bind(key)
        .fetch_optional(self.conn())
        .await
        .map_err(db)?;
        row.map(|r| {
            let request_hash: Vec<u8> = get(&r, "request_hash")?;
            let status: i64 = get(&r, "status")?;
            let saved = (status != 0)
                .then(|| {
                    Ok::<_, Error>(SavedResponse {
                        request_hash: request_hash.clone(),
                        status: status as u16,
                        body: get(&r, "body")?,
                    })
                })
                .transpose()?;
            Ok(IdempotencyKey {
                request_hash,
                saved,
                locked_until: get_opt_ts(&r, "locked_until")?,
            })
        })
        .transpose()
    }
    async fn take_over_idempotency_key(
        &mut self,
        tenant: TenantId,
        key: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<bool> {
        let taken = sqlx::query(
            "UPDATE idempotency_keys SET locked_until = ?
             WHERE tenant_id = ? AND key = ? AND status = 0 AND (locked_until IS NULL OR locked_until <= ?)",
        )
        .bind(ts(lease_until))
        .bind(id(tenant))
        .bind(key)
        .bind(ts(now))
        .execute(self.conn())
        .await
        .map_err(db)?
        .rows_affected();
        Ok(taken == 1)
    }
    async fn save_response(
        &mut self,
        tenant: TenantId,
        key: &str,
        saved: &SavedResponse,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = ?, body = ?, locked_until = NULL
             WHERE tenant_id = ? AND key = ? AND request_hash = ? AND status = 0",
        )
        .bind(saved.status as i64)
        .bind(&saved.body)
        .bind(id(tenant))
        .bind(key)
        .bind(&saved.request_hash)
        .execute(self.conn())
        .await
        .map_err(db)?;
        Ok(())
    }
    async fn release_idempotency_key(&mut self, tenant: TenantId, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = ? AND key = ? AND status = 0")
            .bind(id(tenant))
            .bind(key)
            .execute(self.conn())
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn upsert_template(&mut self, t: &Template) -> Result<()> {
        sqlx::query(
            "INSERT INTO templates (tenant_id, id, name, subject, body, html_body, pre_approved, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant_id, id) DO UPDATE SET name = excluded.name, subject = excluded.subject,
               body = excluded.body, html_body = excluded.html_body, pre_approved = excluded.pre_approved,
               updated_at = excluded.updated_at",
        )
        .bind(id(t.tenant_id))
        .bind(t.id.as_str())
        .bind(&t.name)
        .bind(&t.subject)
        .bind(&t.body)
        .bind(&t.html_body)
        .bind(t.pre_approved)
        .bind(ts(t.created_at))
        .bind(ts(t.updated_at))
        .execute(self.conn())
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn get_template(
        &mut self,
        tenant: TenantId,
        tid: &TemplateId,
    ) -> Result<Option<Template>> {
        let row = sqlx::query("SELECT * FROM templates WHERE tenant_id = ? AND id = ?")
            .bind(id(tenant))
            .bind(tid.as_str())
            .fetch_optional(self.conn())
            .await
            .map_err(db)?;
        row.as_ref().map(template).transpose()
    }

    async fn list_templates(&mut self, tenant: TenantId, page: &Page) -> Result<Listed<Template>> {
        let rows = sqlx::query(
            "SELECT * FROM templates WHERE tenant_id = ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(id(tenant))
        .bind(page.after.clone().unwrap_or_default())
        .bind(page.limit as i64 + 1)
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        let items = rows.iter().map(template).collect::<Result<Vec<_>>>()?;
        Ok(page_of(items, page, |t| t.id.as_str().to_string()))
    }

    async fn templates_of(
        &mut self,
        tenants: &[TenantId],
    ) -> Result<HashMap<(TenantId, TemplateId), Template>> {
        let ids: Vec<String> = tenants.iter().map(|t| hex_id(*t)).collect();
        let rows = sqlx::query(
            "SELECT * FROM templates WHERE tenant_id IN (SELECT unhex(value) FROM json_each(?))",
        )
        .bind(serde_json::to_string(&ids).expect("strings serialize"))
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        let mut out = HashMap::new();
        for r in &rows {
            let t = template(r)?;
            out.insert((t.tenant_id, t.id.clone()), t);
        }
        Ok(out)
    }

    async fn insert_sequence(&mut self, s: &Sequence) -> Result<()> {
        sqlx::query(
            "INSERT INTO lead_nurture_sequences (tenant_id, id, name, status, entry_rules, exit_rules, created_by, priority,
               version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id(s.tenant_id))
        .bind(id(s.id))
        .bind(&s.name)
        .bind(s.status.as_str())
        .bind(entry_rules_json(&s.entry_rules))
        .bind(s.exit_rules.to_json().to_string())
        .bind(id(s.created_by))
        .bind(s.priority)
        .bind(s.version)
        .bind(ts(s.created_at))
        .bind(ts(s.updated_at))
        .execute(self.conn())
        .await
        .map_err(db)?;
        self.write_steps(s).await
    }

    async fn update_sequence(&mut self, s: &Sequence) -> Result<()> {
        let done = sqlx::query(
            "UPDATE lead_nurture_sequences SET name = ?, status = ?, entry_rules = ?, exit_rules = ?, priority = ?,
               version = ?, updated_at = ? WHERE tenant_id = ? AND id = ? AND version = ?",
        )
        .bind(&s.name)
        .bind(s.status.as_str())
        .bind(entry_rules_json(&s.entry_rules))
        .bind(s.exit_rules.to_json().to_string())
        .bind(s.priority)
        .bind(s.version)
        .bind(ts(s.updated_at))
        .bind(id(s.tenant_id))
        .bind(id(s.id))
        .bind(s.version - 1)
        .execute(self.conn())
        .await
        .map_err(db)?
        .rows_affected();
        if done != 1 {
            return Err(Error::conflict(
                "the sequence changed while this write was prepared; retry",
            ));
        }
        self.write_steps(s).await
    }

    async fn get_sequence(
        &mut self,
        tenant: TenantId,
        sid: SequenceId,
    ) -> Result<Option<Sequence>> {
        let row =
            sqlx::query("SELECT * FROM lead_nurture_sequences WHERE tenant_id = ? AND id = ?")
                .bind(id(tenant))
                .bind(id(sid))
                .fetch_optional(self.conn())
                .await
                .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let mut seqs = vec![sequence(&row)?];
        self.steps_for(&mut seqs).await?;
        Ok(seqs.pop())
    }

    async fn list_sequences(&mut self, tenant: TenantId, page: &Page) -> Result<Listed<Sequence>> {
        let rows = sqlx::query("SELECT * FROM lead_nurture_sequences WHERE tenant_id = ? AND id > ? ORDER BY id LIMIT ?")
            .bind(id(tenant))
            .bind(id_after(page)?.unwrap_or_default())
            .bind(page.limit as i64 + 1)
            .fetch_all(self.conn())
            .await
            .map_err(db)?;
        let mut items = rows.iter().map(sequence).collect::<Result<Vec<_>>>()?;
        self.steps_for(&mut items).await?;
        Ok(page_of(items, page, |s| s.id.to_string()))
    }

    async fn sequences_by_id(
        &mut self,
        keys: &[(TenantId, SequenceId)],
    ) -> Result<HashMap<SequenceId, Sequence>> {
        let rows = sqlx::query(
            "SELECT s.* FROM json_each(?) j JOIN lead_nurture_sequences s ON s.tenant_id = unhex(j.value ->> 0) AND s.id = unhex(j.value ->> 1)",
        )
        .bind(pairs_json(keys))
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        let mut seqs = rows.iter().map(sequence).collect::<Result<Vec<_>>>()?;
        self.steps_for(&mut seqs).await?;
        Ok(seqs.into_iter().map(|s| (s.id, s)).collect())
    }

    async fn auto_enroll_sequences(&mut self, tenant: TenantId) -> Result<Vec<Sequence>> {
        let rows = sqlx::query(
            "SELECT * FROM lead_nurture_sequences WHERE tenant_id = ? AND status = 'active' AND entry_rules IS NOT NULL
             ORDER BY priority DESC, created_at, id",
        )
        .bind(id(tenant))
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        let mut seqs = rows.iter().map(sequence).collect::<Result<Vec<_>>>()?;
        self.steps_for(&mut seqs).await?;
        Ok(seqs)
    }

    async fn tenants_with_auto_enroll(&mut self) -> Result<Vec<TenantId>> {
        let rows = sqlx::query(
            "SELECT DISTINCT tenant_id FROM lead_nurture_sequences WHERE status = 'active' AND entry_rules IS NOT NULL ORDER BY tenant_id",
        )
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        rows.iter().map(|r| get_id(r, "tenant_id")).collect()
    }

    async fn sequence_stats(&mut self, tenant: TenantId, sid: SequenceId) -> Result<SequenceStats> {
        let (t, s) = (id(tenant), id(sid));
        let mut stats = SequenceStats::default();
        let rows = sqlx::query(
            "SELECT status, exit_reason, count(*) AS n FROM lead_nurture_enrollments
             WHERE tenant_id = ? AND sequence_id = ? GROUP BY status, exit_reason ORDER BY status, exit_reason",
        )
        .bind(t)
        .bind(s)
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        for r in &rows {
            let status: String = get(r, "status")?;
            let reason: Option<String> = get(r, "exit_reason")?;
            let n: i64 = get(r, "n")?;
            stats.enrolled += n;
            match status.as_str() {
                "active" => stats.active += n,
                "paused" => stats.paused += n,
                "completed" => stats.completed += n,
                _ => {
                    let reason = reason.unwrap_or_default();
                    if reason == exit_reason::POSITIVE_REPLY || reason == exit_reason::REPLIED {
                        stats.replied += n;
                    }
                    if reason == exit_reason::CONVERTED {
                        stats.converted += n;
                    }
                    stats.exited_by_reason.push((reason, n));
                }
            }
        }
        let rows = sqlx::query(
            "SELECT step_order, count(DISTINCT enrollment_id) AS n FROM activities
             WHERE tenant_id = ? AND sequence_id = ? AND type IN ('nurture_step_executed', 'nurture_step_skipped')
             GROUP BY step_order ORDER BY step_order",
        )
        .bind(t)
        .bind(s)
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        for r in &rows {
            let step: Option<i64> = get(r, "step_order")?;
            stats.reached_step.push((step.unwrap_or(0), get(r, "n")?));
        }
        Ok(stats)
    }

    async fn insert_lead(&mut self, lead: &Lead) -> Result<()> {
        self.write_lead(lead, true).await
    }

    async fn insert_leads(&mut self, leads: &[Lead]) -> Result<()> {
        for chunk in leads.chunks(rows_per_statement(22)) {
            let mut qb =
                QueryBuilder::<Sqlite>::new(format!("INSERT INTO leads ({LEAD_COLUMNS}) "));
            qb.push_values(chunk, |mut b, l| {
                b.push_bind(id(l.tenant_id))
                    .push_bind(id(l.id))
                    .push_bind(l.email.as_str().to_string())
                    .push_bind(l.first_name.clone())
                    .push_bind(l.last_name.clone())
                    .push_bind(l.company.clone())
                    .push_bind(l.timezone.as_ref().map(|t| t.as_str().to_string()))
                    .push_bind(l.status.as_str())
                    .push_bind(l.score)
                    .push_bind(l.score_band.clone())
                    .push_bind(serde_json::to_string(&l.segments).expect("strings serialize"))
                    .push_bind(serde_json::Value::Object(l.attributes.clone()).to_string())
                    .push_bind(opt_id(l.owner_id))
                    .push_bind(l.do_not_contact)
                    .push_bind(l.unsubscribed)
                    .push_bind(l.bounced)
                    .push_bind(opt_ts(l.last_reply_at))
                    .push_bind(l.last_reply_sentiment.map(|s| s.as_str()))
                    .push_bind(opt_ts(l.last_engaged_at))
                    .push_bind(opt_ts(l.last_outbound_at))
                    .push_bind(ts(l.created_at))
                    .push_bind(ts(l.updated_at));
            });
            qb.build().execute(self.conn()).await.map_err(db)?;
        }
        Ok(())
    }

    async fn update_lead(&mut self, lead: &Lead) -> Result<()> {
        self.write_lead(lead, false).await
    }

    async fn get_lead(&mut self, tenant: TenantId, lid: LeadId) -> Result<Option<Lead>> {
        let row = sqlx::query("SELECT * FROM leads WHERE tenant_id = ? AND id = ?")
            .bind(id(tenant))
            .bind(id(lid))
            .fetch_optional(self.conn())
            .await
            .map_err(db)?;
        row.as_ref().map(lead).transpose()
    }

    async fn leads_by_id(&mut self, keys: &[(TenantId, LeadId)]) -> Result<HashMap<LeadId, Lead>> {
        let rows = sqlx::query("SELECT l.* FROM json_each(?) j JOIN leads l ON l.tenant_id = unhex(j.value ->> 0) AND l.id = unhex(j.value ->> 1)")
            .bind(pairs_json(keys))
            .fetch_all(self.conn())
            .await
            .map_err(db)?;
        rows.iter().map(|r| lead(r).map(|l| (l.id, l))).collect()
    }

    async fn enrollable_leads(
        &mut self,
        tenant: TenantId,
        statuses: &[LeadStatus],
        score_bands: Option<&[String]>,
        after: Option<LeadId>,
        limit: u32,
    ) -> Result<Vec<Lead>> {
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT l.* FROM leads l WHERE l.tenant_id = ");
        qb.push_bind(id(tenant));
        qb.push(" AND l.id > ")
            .push_bind(after.map(id).unwrap_or_default());
        qb.push(" AND l.do_not_contact = 0 AND l.unsubscribed = 0 AND l.bounced = 0");
        qb.push(" AND l.status IN (SELECT value FROM json_each(")
            .push_bind(serde_json::to_string(&statuses).expect("strings serialize"))
            .push("))");
        if let Some(bands) = score_bands {
            qb.push(" AND l.score_band IN (SELECT value FROM json_each(")
                .push_bind(serde_json::to_string(bands).expect("strings serialize"))
                .push("))");
        }
        qb.push(
            " AND NOT EXISTS (SELECT 1 FROM lead_nurture_enrollments e WHERE e.tenant_id = l.tenant_id
               AND e.lead_id = l.id AND e.status IN ('active', 'paused'))",
        );
        qb.push(" ORDER BY l.id LIMIT ").push_bind(limit as i64);
        let rows = self.fetch_all(&mut qb).await?;
        rows.iter().map(lead).collect()
    }

    async fn outbound_since(
        &mut self,
        leads: &[(TenantId, LeadId)],
        since: Timestamp,
    ) -> Result<HashMap<LeadId, Vec<Timestamp>>> {
        let rows = sqlx::query(
            "SELECT m.lead_id, m.created_at FROM json_each(?) j JOIN messages m
               ON m.tenant_id = unhex(j.value ->> 0) AND m.lead_id = unhex(j.value ->> 1) AND m.created_at > ?",
        )
        .bind(pairs_json(leads))
        .bind(ts(since))
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        let mut out: HashMap<LeadId, Vec<Timestamp>> = HashMap::new();
        for r in &rows {
            out.entry(get_id(r, "lead_id")?)
                .or_default()
                .push(get_ts(r, "created_at")?);
        }
        Ok(out)
    }

    async fn get_enrollment(
        &mut self,
        tenant: TenantId,
        eid: EnrollmentId,
    ) -> Result<Option<Enrollment>> {
        let row =
            sqlx::query("SELECT * FROM lead_nurture_enrollments WHERE tenant_id = ? AND id = ?")
                .bind(id(tenant))
                .bind(id(eid))
                .fetch_optional(self.conn())
                .await
                .map_err(db)?;
        row.as_ref().map(enrollment).transpose()
    }

    async fn live_enrollment(
        &mut self,
        tenant: TenantId,
        lid: LeadId,
    ) -> Result<Option<Enrollment>> {
        let row = sqlx::query(
            "SELECT * FROM lead_nurture_enrollments WHERE tenant_id = ? AND lead_id = ? AND status IN ('active', 'paused')",
        )
        .bind(id(tenant))
        .bind(id(lid))
        .fetch_optional(self.conn())
        .await
        .map_err(db)?;
        row.as_ref().map(enrollment).transpose()
    }

    async fn ended_since(
        &mut self,
        tenant: TenantId,
        lid: LeadId,
        sid: SequenceId,
        since: Timestamp,
    ) -> Result<Option<Enrollment>> {
        let row = sqlx::query(
            "SELECT * FROM lead_nurture_enrollments WHERE tenant_id = ? AND lead_id = ? AND sequence_id = ? AND ended_at > ?
             ORDER BY ended_at DESC LIMIT 1",
        )
        .bind(id(tenant))
        .bind(id(lid))
        .bind(id(sid))
        .bind(ts(since))
        .fetch_optional(self.conn())
        .await
        .map_err(db)?;
        row.as_ref().map(enrollment).transpose()
    }

    async fn ended_pairs_since(
        &mut self,
        tenant: TenantId,
        since: Timestamp,
    ) -> Result<Vec<(LeadId, SequenceId)>> {
        let rows = sqlx::query("SELECT lead_id, sequence_id FROM lead_nurture_enrollments WHERE tenant_id = ? AND ended_at > ?")
            .bind(id(tenant))
            .bind(ts(since))
            .fetch_all(self.conn())
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| Ok((get_id(r, "lead_id")?, get_id(r, "sequence_id")?)))
            .collect()
    }
    async fn list_enrollments(
        &mut self,
        tenant: TenantId,
        f: &EnrollmentFilter,
        page: &Page,
    ) -> Result<Listed<Enrollment>> {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT * FROM lead_nurture_enrollments WHERE tenant_id = ",
        );
        qb.push_bind(id(tenant));
        if let Some(l) = f.lead_id {
            qb.push(" AND lead_id = ").push_bind(id(l));
        }
        if let Some(s) = f.sequence_id {
            qb.push(" AND sequence_id = ").push_bind(id(s));
        }
        if let Some(st) = f.status {
            qb.push(" AND status = ").push_bind(st.as_str());
        }
        self.id_page(&mut qb, page, enrollment, |e| e.id).await
    }

    async fn live_enrollments_of_sequence(
        &mut self,
        tenant: TenantId,
        sid: SequenceId,
    ) -> Result<Vec<Enrollment>> {
        let rows = sqlx::query(
            "SELECT * FROM lead_nurture_enrollments WHERE tenant_id = ? AND sequence_id = ? AND status IN ('active', 'paused')",
        )
        .bind(id(tenant))
        .bind(id(sid))
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        rows.iter().map(enrollment).collect()
    }

    async fn claim_due(&mut self, until: Timestamp, limit: u32) -> Result<Vec<Enrollment>> {
        // The claim is a plain read: the scheduler's transaction began IMMEDIATE, so no other
        // writer (process or connection) can touch these rows until it commits.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ENROLLMENT_COLUMNS} FROM lead_nurture_enrollments e
             WHERE e.status = 'active' AND e.next_step_on <= ?1
               AND EXISTS (SELECT 1 FROM lead_nurture_sequences s
                           WHERE s.tenant_id = e.tenant_id AND s.id = e.sequence_id AND s.status = 'active')
             ORDER BY e.next_step_on LIMIT ?2"
        )))
        .bind(ts(until))
        .bind(limit as i64)
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        let mut claimed = rows.iter().map(enrollment).collect::<Result<Vec<_>>>()?;
        // Equal due instants run in id order, as on PostgreSQL.
        claimed.sort_by_key(|e| (e.next_step_on, e.id));
        Ok(claimed)
    }

    async fn enter_batch_slot(&mut self, _slots: u32) -> Result<()> {
        // SQLite has one writer: the batch's IMMEDIATE transaction is the one slot there is.
        Ok(())
    }

    async fn next_due_at(&mut self) -> Result<Option<Timestamp>> {
        let row = sqlx::query(
            "SELECT min(e.next_step_on) AS due FROM lead_nurture_enrollments e
             WHERE e.status = 'active' AND EXISTS (SELECT 1 FROM lead_nurture_sequences s
               WHERE s.tenant_id = e.tenant_id AND s.id = e.sequence_id AND s.status = 'active')",
        )
        .fetch_one(self.conn())
        .await
        .map_err(db)?;
        get_opt_ts(&row, "due")
    }

    async fn due_count(&mut self, at: Timestamp) -> Result<i64> {
        let row = sqlx::query(
            "SELECT count(*) AS n FROM lead_nurture_enrollments e
             WHERE e.status = 'active' AND e.next_step_on <= ? AND EXISTS (SELECT 1 FROM lead_nurture_sequences s
               WHERE s.tenant_id = e.tenant_id AND s.id = e.sequence_id AND s.status = 'active')",
        )
        .bind(ts(at))
        .fetch_one(self.conn())
        .await
        .map_err(db)?;
        get(&row, "n")
    }

    async fn get_approval(
        &mut self,
        tenant: TenantId,
        aid: ApprovalId,
    ) -> Result<Option<Approval>> {
        let row = sqlx::query("SELECT * FROM approvals WHERE tenant_id = ? AND id = ?")
            .bind(id(tenant))
            .bind(id(aid))
            .fetch_optional(self.conn())
            .await
            .map_err(db)?;
        row.as_ref().map(approval).transpose()
    }

    async fn list_approvals(
        &mut self,
        tenant: TenantId,
        status: Option<ApprovalStatus>,
        page: &Page,
    ) -> Result<Listed<Approval>> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM approvals WHERE tenant_id = ");
        qb.push_bind(id(tenant));
        if let Some(st) = status {
            qb.push(" AND status = ").push_bind(st.as_str());
        }
        self.id_page(&mut qb, page, approval, |a| a.id).await
    }

    async fn approvals_by_id(
        &mut self,
        keys: &[(TenantId, ApprovalId)],
    ) -> Result<HashMap<ApprovalId, Approval>> {
        let rows = sqlx::query("SELECT a.* FROM json_each(?) j JOIN approvals a ON a.tenant_id = unhex(j.value ->> 0) AND a.id = unhex(j.value ->> 1)")
            .bind(pairs_json(keys))
            .fetch_all(self.conn())
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| approval(r).map(|a| (a.id, a)))
            .collect()
    }

    async fn get_task(&mut self, tenant: TenantId, tid: TaskId) -> Result<Option<Task>> {
        let row = sqlx::query("SELECT * FROM tasks WHERE tenant_id = ? AND id = ?")
            .bind(id(tenant))
            .bind(id(tid))
            .fetch_optional(self.conn())
            .await
            .map_err(db)?;
        row.as_ref().map(task).transpose()
    }

    async fn list_tasks(
        &mut self,
        tenant: TenantId,
        status: Option<TaskStatus>,
        page: &Page,
    ) -> Result<Listed<Task>> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM tasks WHERE tenant_id = ");
        qb.push_bind(id(tenant));
        if let Some(st) = status {
            qb.push(" AND status = ").push_bind(st.as_str());
        }
        self.id_page(&mut qb, page, task, |t| t.id).await
    }

    async fn open_work(
        &mut self,
        tenant: TenantId,
        eid: EnrollmentId,
    ) -> Result<(Vec<Approval>, Vec<Task>)> {
        let rows = sqlx::query("SELECT * FROM approvals WHERE tenant_id = ? AND enrollment_id = ? AND status = 'pending'")
            .bind(id(tenant))
            .bind(id(eid))
            .fetch_all(self.conn())
            .await
            .map_err(db)?;
        let approvals = rows.iter().map(approval).collect::<Result<Vec<_>>>()?;
        let rows = sqlx::query(
            "SELECT * FROM tasks WHERE tenant_id = ? AND enrollment_id = ? AND status = 'open'",
        )
        .bind(id(tenant))
        .bind(id(eid))
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        let tasks = rows.iter().map(task).collect::<Result<Vec<_>>>()?;
        Ok((approvals, tasks))
    }

    async fn get_message(&mut self, tenant: TenantId, mid: MessageId) -> Result<Option<Message>> {
        let row = sqlx::query("SELECT * FROM messages WHERE tenant_id = ? AND id = ?")
            .bind(id(tenant))
            .bind(id(mid))
            .fetch_optional(self.conn())
            .await
            .map_err(db)?;
        row.as_ref().map(message).transpose()
    }

    async fn list_messages(
        &mut self,
        tenant: TenantId,
        f: &MessageFilter,
        page: &Page,
    ) -> Result<Listed<Message>> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM messages WHERE tenant_id = ");
        qb.push_bind(id(tenant));
        if let Some(l) = f.lead_id {
            qb.push(" AND lead_id = ").push_bind(id(l));
        }
        if let Some(st) = f.status {
            qb.push(" AND status = ").push_bind(st.as_str());
        }
        self.id_page(&mut qb, page, message, |m| m.id).await
    }

    async fn list_activities(
        &mut self,
        tenant: TenantId,
        f: &ActivityFilter,
        page: &Page,
    ) -> Result<Listed<Activity>> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM activities WHERE tenant_id = ");
        qb.push_bind(id(tenant));
        if let Some(l) = f.lead_id {
            qb.push(" AND lead_id = ").push_bind(id(l));
        }
        if let Some(e) = f.enrollment_id {
            // Reaches the rows through activities_by_lead: the enrollment's lead.
            qb.push(" AND enrollment_id = ").push_bind(id(e));
            qb.push(
                " AND lead_id = (SELECT lead_id FROM lead_nurture_enrollments WHERE tenant_id = ",
            )
            .push_bind(id(tenant))
            .push(" AND id = ")
            .push_bind(id(e))
            .push(")");
        }
        if let Some(t) = f.activity_type {
            qb.push(" AND type = ").push_bind(t.as_str());
        }
        if let Some(after) = &page.after {
            // Key: "<at micros>:<id>", the position in (at, id) order.
            let (at, aid) = after.split_once(':').ok_or_else(bad_cursor)?;
            let at: i64 = at.parse().map_err(|_| bad_cursor())?;
            let aid = Uuid::parse_str(aid).map_err(|_| bad_cursor())?;
            qb.push(" AND (at, id) > (")
                .push_bind(at)
                .push(", ")
                .push_bind(id(aid))
                .push(")");
        }
        qb.push(" ORDER BY at, id LIMIT ")
            .push_bind(page.limit as i64 + 1);
        let rows = self.fetch_all(&mut qb).await?;
        let items = rows.iter().map(activity).collect::<Result<Vec<_>>>()?;
        Ok(page_of(items, page, |a| format!("{}:{}", ts(a.at), a.id)))
    }

    async fn apply(&mut self, fx: &Effects) -> Result<()> {
        // Enrollment updates first: if one lost a race, nothing else of the batch is written.
        self.update_enrollments(&fx.enrollment_updates).await?;
        self.insert_enrollments(&fx.new_enrollments).await?;
        self.upsert_approvals(&fx.new_approvals).await?;
        self.upsert_approvals(&fx.approval_updates).await?;
        self.upsert_tasks(&fx.new_tasks).await?;
        self.upsert_tasks(&fx.task_updates).await?;
        self.insert_messages(&fx.messages).await?;
        self.touch_outbound(&fx.lead_outbound).await?;
        self.insert_activities(&fx.activities).await?;
        Ok(())
    }
}
