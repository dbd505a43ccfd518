//! Nurture's storage on PostgreSQL (issue #4): the production backend that any number of
//! `nurture serve` / `nurture worker` processes share (SPEC section 7).
//!
//! It behaves like `nurture-sqlite` — same ordering, same page keys, same errors — and adds
//! what a shared server needs:
//!
//! - **Isolation in the database.** Every tenant table has row-level security enabled and
//!   forced. The pool's connections `SET ROLE nurture_app` on connect, a role that owns nothing
//!   and does not bypass RLS, even when the URL names a superuser. [`Store::begin`] sets the
//!   tenant (or the system scope) with `set_config(..., true)`: transaction-local, so a pooled
//!   connection never carries one request's tenant into the next, and a transaction that set
//!   nothing sees nothing.
//! - **Scale-out.** [`Tx::claim_due`] locks due enrollments with `FOR UPDATE SKIP LOCKED`, so
//!   concurrent workers claim disjoint batches; the batch's enrollment writes are guarded by
//!   the version each row was claimed at (river's completer), so an outcome is written only if
//!   the row is still as its worker claimed it, and a step never runs twice. The claim is the
//!   open transaction's lock: a worker that dies releases it with its connection, one that
//!   hangs loses its session after the 60 s lease (`SESSION_SETUP`). Processes wake each other
//!   with `NOTIFY`/`LISTEN nurture_due` ([`Store::announce_due`], [`Store::listen_due`]).
//! - **Plans by key.** A batch's statements reach their rows through keys, also when the
//!   planner's statistics lag behind a bulk change ([`Tx::claim_due`] explains how).
//! - **Set-at-a-time writes.** A batch's rows go in as one statement per table, binding one
//!   array per column and `unnest`ing them: the statement text never changes with the batch
//!   size, so it is prepared once per connection (SPEC section 7: ≈46,000 steps/s at 1,000 a
//!   transaction).
//!
//! Where PostgreSQL cannot behave like SQLite's single writer, the difference is handled here:
//! SQLite serializes every write transaction, PostgreSQL runs them concurrently at READ
//! COMMITTED. Lost updates are prevented by the enrollment version guard and by locking a lead
//! row when it is read inside a transaction ([`Tx::get_lead`]); a serialization failure or a
//! deadlock between two writers becomes a retryable [`Error::Conflict`].

mod rows;
pub mod testing;
mod ts;

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
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, Postgres, QueryBuilder, Transaction};
pub use ts::Ts;
use uuid::Uuid;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The role the application's queries run as (created by the first migration).
pub const APP_ROLE: &str = "nurture_app";

/// Run on every pooled connection before first use.
///
/// `SET ROLE` makes every query subject to row-level security whoever the URL names.
/// `idle_in_transaction_session_timeout` is the scheduler's claim lease: a claim is a row lock
/// held by an open transaction, so a worker that dies or hangs mid-batch loses its session
/// after 60 s, its transaction rolls back, its locks go, and the rows are claimable again by
/// the next worker (river's rescuer, done by the server). A batch is planned in memory between
/// its reads and its one write, far below that. `statement_timeout` bounds any one statement.
const SESSION_SETUP: &str = "SET ROLE nurture_app; \
    SET statement_timeout = '30s'; \
    SET idle_in_transaction_session_timeout = '60s'";

/// How long `connect` waits for the server before reporting it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `/readyz`'s ping waits: a readiness probe must answer quickly, also when the pool
/// would otherwise keep retrying a server that is gone.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The channel on which processes tell each other that work may have come due
/// ([`Store::announce_due`], [`Store::listen_due`]).
pub const DUE_CHANNEL: &str = "nurture_due";

/// The listener's reconnection backoff: doubling from the first delay up to the cap.
const LISTEN_BACKOFF_FIRST: Duration = Duration::from_millis(250);
const LISTEN_BACKOFF_CAP: Duration = Duration::from_secs(30);

/// The first key of the advisory locks that are the scheduler's batch slots
/// ([`Tx::enter_batch_slot`]); the second key is the slot, 0..slots. ("NURT")
pub const BATCH_SLOT_LOCKS: i32 = 0x4e55_5254;

/// The scheduler's claim ([`Tx::claim_due`]) after its select list: due (`$1`) active
/// enrollments of active sequences, oldest due first, at most `$2`, locked and passing over
/// rows another worker holds. Public so that `nurture bench --reference` claims exactly so.
/// `OFFSET 0` keeps the sequence check a probe per due row: as a join, the planner may start
/// from the sequences and sort every due enrollment of theirs per batch.
pub const CLAIM_DUE: &str = "FROM lead_nurture_enrollments e
     WHERE e.status = 'active' AND e.next_step_on <= $1
       AND EXISTS (SELECT 1 FROM lead_nurture_sequences s
                   WHERE s.tenant_id = e.tenant_id AND s.id = e.sequence_id AND s.status = 'active'
                   OFFSET 0)
     ORDER BY e.next_step_on, e.id
     LIMIT $2
     FOR UPDATE OF e SKIP LOCKED";

/// SQLSTATE `query_canceled`: what a statement that ran into `statement_timeout` reports.
const QUERY_CANCELED: &str = "57014";

/// Constraint names the errors are mapped from (see the migrations).
const ONE_LIVE_PER_LEAD: &str = "lead_nurture_enrollments_one_live_per_lead";
const STEPS_NO_GAPS: &str = "lead_nurture_sequence_steps_no_gaps";

/// The PostgreSQL store: a pool of connections running as [`APP_ROLE`].
pub struct PgStore {
    pool: PgPool,
    /// The options as given (connecting user, no role change): what migrations run as.
    options: PgConnectOptions,
    /// `postgres://user@host:port/db`, never the password: for messages.
    target: String,
    /// The `LISTEN` tasks started by [`Store::listen_due`], stopped when the store is dropped.
    listeners: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        let listeners = match self.listeners.get_mut() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        for l in listeners.drain(..) {
            l.abort();
        }
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_string();
    };
    format!(
        "{}{}:***{}",
        &url[..scheme_end + 3],
        &userinfo[..colon],
        &rest[at..]
    )
}

/// Where the options point, without the password.
fn describe(o: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        o.get_username(),
        o.get_host(),
        o.get_port(),
        o.get_database().unwrap_or(o.get_username())
    )
}

fn db(e: sqlx::Error) -> Error {
    if let sqlx::Error::Database(d) = &e {
        match d.constraint() {
            Some(ONE_LIVE_PER_LEAD) => {
                return Error::conflict("the lead already has an active or paused enrollment");
            }
            Some(STEPS_NO_GAPS) => {
                return Error::invalid("steps", "step orders must run 1..N without gaps");
            }
            _ => {}
        }
        match d.code().as_deref() {
            // serialization_failure, deadlock_detected: two transactions wrote the same rows at
            // once. SQLite would have queued the second; here one loses and may simply retry.
            Some("40001") | Some("40P01") => {
                return Error::conflict("a concurrent write touched the same rows; retry");
            }
            // PostgreSQL text and jsonb cannot hold U+0000 (SQLite can): the input is refused
            // rather than failing as a storage error.
            Some("22021") | Some("22P05") => {
                return Error::Unprocessable(
                    "text may not contain the NUL character (\\u0000)".into(),
                );
            }
            _ => {}
        }
    }
    Error::store(e)
}

impl PgStore {
    /// Begins with `begin` (`BEGIN` or `BEGIN READ ONLY`) and sets the transaction's tenant.
    async fn begin_as(&self, begin: &'static str, scope: Scope) -> Result<Box<dyn Tx>> {
        let mut tx = self.pool.begin_with(begin).await.map_err(db)?;
        let (tenant, scope) = match scope {
            Scope::Tenant(t) => (t.hyphenated().to_string(), ""),
            Scope::System => (String::new(), "system"),
        };
        // `true`: local to this transaction, gone at commit or rollback (never per session).
        sqlx::query("SELECT set_config('nurture.tenant_id', $1, true), set_config('nurture.scope', $2, true)")
            .bind(tenant)
            .bind(scope)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        Ok(Box::new(PgTx {
            tx,
            read_only: begin == READ_ONLY,
        }))
    }

    /// Connects to the server named by a `postgres://` URL. Fails at once, naming the server
    /// (password redacted), if it cannot be reached, rather than at the first query.
    pub async fn connect(url: &str) -> Result<PgStore> {
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            Error::invalid(
                "database",
                format!("{} is not a PostgreSQL URL: {e}", redact_url(url)),
            )
        })?;
        Self::connect_with(options).await
    }

    /// [`PgStore::connect`] with options already parsed.
    pub async fn connect_with(options: PgConnectOptions) -> Result<PgStore> {
        let target = describe(&options);
        // Probe with one plain connection: the pool itself connects lazily, and its
        // connections need the role that `migrate` creates.
        let probe = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| {
                Error::store(format!(
                    "cannot connect to PostgreSQL at {target}: no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| Error::store(format!("cannot connect to PostgreSQL at {target}: {e}")))?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::raw_sql(SESSION_SETUP).execute(&mut *conn).await?;
                    Ok(())
                })
            })
            .connect_lazy_with(options.clone());
        Ok(PgStore {
            pool,
            options,
            target,
            listeners: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The application's pool (every connection runs as [`APP_ROLE`]).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// `postgres://user@host:port/db`, without the password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// A connection as the connecting user (no `SET ROLE`): the owner of the tables.
    async fn owner_connection(&self) -> Result<PgConnection> {
        PgConnection::connect_with(&self.options)
            .await
            .map_err(|e| {
                Error::store(format!(
                    "cannot connect to PostgreSQL at {}: {e}",
                    self.target
                ))
            })
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    /// Runs the migrations as the connecting user, who owns the tables (the application role
    /// may not change the schema), then checks that the application role cannot see past RLS.
    async fn migrate(&self) -> Result<()> {
        let mut conn = self.owner_connection().await?;
        // `run_direct` is `run` without the `Acquire` bound that `async_trait`'s Send check
        // cannot prove for a borrowed connection (sqlx's own workaround).
        MIGRATOR
            .run_direct(None, &mut conn, false)
            .await
            .map_err(|e| Error::store(format!("migration failed: {e}")))?;
        let row = sqlx::query("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1")
            .bind(APP_ROLE)
            .fetch_one(&mut conn)
            .await
            .map_err(db)?;
        let (superuser, bypass): (bool, bool) =
            (get(&row, "rolsuper")?, get(&row, "rolbypassrls")?);
        let _ = conn.close().await;
        if superuser || bypass {
            return Err(Error::store(format!(
                "role {APP_ROLE} is a superuser or bypasses row-level security; \
                 run ALTER ROLE {APP_ROLE} NOSUPERUSER NOBYPASSRLS"
            )));
        }
        Ok(())
    }

    async fn begin(&self, scope: Scope) -> Result<Box<dyn Tx>> {
        self.begin_as("BEGIN", scope).await
    }

    async fn begin_read(&self, scope: Scope) -> Result<Box<dyn Tx>> {
        self.begin_as(READ_ONLY, scope).await
    }

    async fn ping(&self) -> Result<()> {
        tokio::time::timeout(PING_TIMEOUT, sqlx::query("SELECT 1").execute(&self.pool))
            .await
            .map_err(|_| {
                Error::store(format!(
                    "PostgreSQL at {} did not answer within {}s",
                    self.target,
                    PING_TIMEOUT.as_secs()
                ))
            })?
            .map_err(db)?;
        Ok(())
    }

    /// `NOTIFY nurture_due` (as `pg_notify`, outside any transaction, so it goes out at once):
    /// every process that listens wakes its scheduler.
    async fn announce_due(&self) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(DUE_CHANNEL)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// `LISTEN nurture_due` on a connection of its own, in a background task that wakes `wake`
    /// once per notification. The first `LISTEN` happens before this returns; when the
    /// connection drops, the task reconnects with capped exponential backoff and wakes `wake`
    /// once after reconnecting (announcements sent meanwhile were lost, so the scheduler looks
    /// for itself). If the first attempt fails, the task keeps trying in the background and
    /// the error is returned so the caller can say so. The task ends when the store is dropped.
    async fn listen_due(&self, wake: std::sync::Arc<tokio::sync::Notify>) -> Result<()> {
        // A pool of one connection that never expires: PgListener reconnects through it.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(CONNECT_TIMEOUT)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    // LISTEN needs no privilege; the session still runs as the app role.
                    sqlx::raw_sql("SET ROLE nurture_app")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
            .connect_lazy_with(self.options.clone());
        let first = listen(&pool).await;
        let (listener, outcome) = match first {
            Ok(l) => (Some(l), Ok(())),
            Err(e) => (
                None,
                Err(Error::store(format!(
                    "cannot LISTEN on PostgreSQL at {}: {e}",
                    self.target
                ))),
            ),
        };
        let task = tokio::spawn(listen_loop(pool, listener, wake));
        match self.listeners.lock() {
            Ok(mut l) => l.push(task.abort_handle()),
            Err(poisoned) => poisoned.into_inner().push(task.abort_handle()),
        }
        outcome
    }
}

/// A listener on [`DUE_CHANNEL`] that reports a lost connection (`try_recv` → `None`) instead
/// of reconnecting by itself, so that reconnection goes through [`listen_loop`]'s backoff.
async fn listen(pool: &PgPool) -> std::result::Result<sqlx::postgres::PgListener, sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
    listener.eager_reconnect(false);
    listener.listen(DUE_CHANNEL).await?;
    Ok(listener)
}

/// Wakes `wake` per notification; on a lost connection, listens again after a delay that
/// doubles per failed attempt (up to [`LISTEN_BACKOFF_CAP`]) and wakes once when it succeeds.
async fn listen_loop(
    pool: PgPool,
    mut listener: Option<sqlx::postgres::PgListener>,
    wake: std::sync::Arc<tokio::sync::Notify>,
) {
    // A listener that could not start has failed once already: wait before the next try.
    let mut failures = u32::from(listener.is_none());
    loop {
        let Some(l) = listener.as_mut() else {
            if failures > 0 {
                let delay = LISTEN_BACKOFF_FIRST
                    .saturating_mul(2u32.saturating_pow(failures - 1))
                    .min(LISTEN_BACKOFF_CAP);
                tokio::time::sleep(delay).await;
            }
            match listen(&pool).await {
                Ok(l) => {
                    tracing::info!(channel = DUE_CHANNEL, "listening for due work again");
                    failures = 0;
                    listener = Some(l);
                    // Announcements made while the connection was down are lost: look now.
                    wake.notify_one();
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, attempt = failures, "cannot LISTEN for due work; retrying");
                }
            }
            continue;
        };
        match l.try_recv().await {
            Ok(Some(_)) => wake.notify_one(),
            Ok(None) => {
                tracing::warn!("lost the LISTEN connection; reconnecting");
                listener = None;
                failures = 1;
            }
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; reconnecting");
                listener = None;
                failures = 1;
            }
        }
    }
}

/// How [`Store::begin_read`] begins.
const READ_ONLY: &str = "BEGIN READ ONLY";

pub struct PgTx {
    tx: Transaction<'static, Postgres>,
    /// Begun `READ ONLY` ([`Store::begin_read`]): reads take no row locks.
    read_only: bool,
}

/// (tenant, id) pairs as two arrays, for `unnest($1::uuid[], $2::uuid[])`.
fn pairs(keys: &[(Uuid, Uuid)]) -> (Vec<Uuid>, Vec<Uuid>) {
    keys.iter().copied().unzip()
}

/// One array per column: `col(rows, |r| r.field)`.
fn col<'a, T, U>(rows: &'a [T], f: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(f).collect()
}

/// Rows of an upsert, the last one winning for a key that appears twice: one
/// `INSERT ... ON CONFLICT DO UPDATE` may not touch a row twice, while SQLite's row-by-row
/// execution lets the last write win.
fn last_by_key<T>(rows: &[T], key: impl Fn(&T) -> (Uuid, Uuid)) -> Vec<&T> {
    let mut at: HashMap<(Uuid, Uuid), usize> = HashMap::new();
    let mut out: Vec<&T> = Vec::with_capacity(rows.len());
    for r in rows {
        match at.get(&key(r)) {
            Some(&i) => out[i] = r,
            None => {
                at.insert(key(r), out.len());
                out.push(r);
            }
        }
    }
    out
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

fn id(u: Uuid) -> String {
    u.hyphenated().to_string()
}

impl PgTx {
    fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    async fn fetch_all(&mut self, qb: &mut QueryBuilder<Postgres>) -> Result<Vec<PgRow>> {
        qb.build().fetch_all(&mut *self.tx).await.map_err(db)
    }

    /// Finishes an id-ordered list query: the page's key (`AND id > cursor`), the order and
    /// one row more than the page (to know whether another follows), then maps the rows.
    async fn id_page<T>(
        &mut self,
        qb: &mut QueryBuilder<Postgres>,
        page: &Page,
        map: fn(&PgRow) -> Result<T>,
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
        let (tenants, ids) = pairs(&keys);
        let rows = sqlx::query(
            "SELECT s.* FROM lead_nurture_sequence_steps s
             WHERE (s.tenant_id, s.sequence_id) IN (SELECT * FROM unnest($1::uuid[], $2::uuid[]))
             ORDER BY s.sequence_id, s.step_order",
        )
        .bind(tenants)
        .bind(ids)
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

    /// Replaces the sequence's steps: one delete, one multi-row insert. The no-gaps trigger
    /// checks the result at commit.
    async fn write_steps(&mut self, s: &Sequence) -> Result<()> {
        sqlx::query(
            "DELETE FROM lead_nurture_sequence_steps WHERE tenant_id = $1 AND sequence_id = $2",
        )
        .bind(s.tenant_id)
        .bind(s.id)
        .execute(self.conn())
        .await
        .map_err(db)?;
        if s.steps.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO lead_nurture_sequence_steps (tenant_id, sequence_id, step_order, channel, delay_hours,
               template_id, requires_human_approval, conditions)
             SELECT $1, $2, v.step_order, v.channel::nurture_channel, v.delay_hours, v.template_id, v.approval, v.conditions
             FROM unnest($3::int4[], $4::text[], $5::int4[], $6::text[], $7::bool[], $8::jsonb[])
               AS v(step_order, channel, delay_hours, template_id, approval, conditions)",
        )
        .bind(s.tenant_id)
        .bind(s.id)
        .bind(col(&s.steps, |st| step_int(st.step_order)))
        .bind(col(&s.steps, |st| st.channel.as_str()))
        .bind(col(&s.steps, |st| st.delay_hours.get() as i32))
        .bind(col(&s.steps, |st| st.template_id.as_ref().map(|t| t.as_str().to_string())))
        .bind(col(&s.steps, |st| st.requires_human_approval))
        .bind(col(&s.steps, |st| st.conditions.as_ref().map(|c| c.to_json())))
        .execute(self.conn())
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn insert_enrollments(&mut self, es: &[Enrollment]) -> Result<()> {
        if es.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO lead_nurture_enrollments (tenant_id, id, lead_id, sequence_id, current_step_order, status,
               source, enrolled_on, next_step_on, exit_reason, paused_reason, approved_approval_id, ended_at,
               updated_at, version)
             SELECT tenant_id, id, lead_id, sequence_id, current_step_order, status::nurture_enrollment_status,
               source, enrolled_on, next_step_on, exit_reason, paused_reason, approved_approval_id, ended_at,
               updated_at, version
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::int4[], $6::text[], $7::text[],
                         $8::timestamptz[], $9::timestamptz[], $10::text[], $11::text[], $12::uuid[],
                         $13::timestamptz[], $14::timestamptz[], $15::int8[])
               AS v(tenant_id, id, lead_id, sequence_id, current_step_order, status, source, enrolled_on,
                    next_step_on, exit_reason, paused_reason, approved_approval_id, ended_at, updated_at, version)",
        )
        .bind(col(es, |e| e.tenant_id))
        .bind(col(es, |e| e.id))
        .bind(col(es, |e| e.lead_id))
        .bind(col(es, |e| e.sequence_id))
        .bind(col(es, |e| step_int(e.current_step_order)))
        .bind(col(es, |e| e.status.as_str()))
        .bind(col(es, |e| e.source.as_str()))
        .bind(col(es, |e| ts(e.enrolled_on)))
        .bind(col(es, |e| opt_ts(e.next_step_on)))
        .bind(col(es, |e| e.exit_reason.clone()))
        .bind(col(es, |e| e.paused_reason.map(|p| p.as_str())))
        .bind(col(es, |e| e.approved_approval_id))
        .bind(col(es, |e| opt_ts(e.ended_at)))
        .bind(col(es, |e| ts(e.updated_at)))
        .bind(col(es, |e| e.version))
        .execute(self.conn())
        .await
        .map_err(db)?;
        Ok(())
    }

    /// One `UPDATE ... FROM unnest(...)` guarded by each row's expected version: if any row
    /// changed since it was read (claimed), nothing of the batch is written.
    async fn update_enrollments(&mut self, updates: &[EnrollmentUpdate]) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let es: Vec<&Enrollment> = updates.iter().map(|u| &u.enrollment).collect();
        let done = sqlx::query(
            "UPDATE lead_nurture_enrollments AS e SET current_step_order = v.current_step_order,
                status = v.status::nurture_enrollment_status, next_step_on = v.next_step_on,
                exit_reason = v.exit_reason, paused_reason = v.paused_reason,
                approved_approval_id = v.approved_approval_id, ended_at = v.ended_at, updated_at = v.updated_at,
                version = v.version
             FROM unnest($1::uuid[], $2::uuid[], $3::int8[], $4::int4[], $5::text[], $6::timestamptz[], $7::text[],
                         $8::text[], $9::uuid[], $10::timestamptz[], $11::timestamptz[], $12::int8[])
               AS v(tenant_id, id, expected, current_step_order, status, next_step_on, exit_reason, paused_reason,
                    approved_approval_id, ended_at, updated_at, version)
             WHERE e.tenant_id = v.tenant_id AND e.id = v.id AND e.version = v.expected",
        )
        .bind(col(&es, |e| e.tenant_id))
        .bind(col(&es, |e| e.id))
        .bind(col(updates, |u| u.expected_version))
        .bind(col(&es, |e| step_int(e.current_step_order)))
        .bind(col(&es, |e| e.status.as_str()))
        .bind(col(&es, |e| opt_ts(e.next_step_on)))
        .bind(col(&es, |e| e.exit_reason.clone()))
        .bind(col(&es, |e| e.paused_reason.map(|p| p.as_str())))
        .bind(col(&es, |e| e.approved_approval_id))
        .bind(col(&es, |e| opt_ts(e.ended_at)))
        .bind(col(&es, |e| ts(e.updated_at)))
        .bind(col(&es, |e| e.version))
        .execute(self.conn())
        .await
        .map_err(db)?
        .rows_affected();
        // Someone else wrote one of these enrollments since it was read: write nothing.
        all_updated(done, updates.len())
    }

    async fn insert_messages(&mut self, ms: &[Message]) -> Result<()> {
        if ms.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO messages (tenant_id, id, enrollment_id, lead_id, sequence_id, step_order, to_address, subject,
               body, html_body, headers, status, attempts, idempotency_key, created_at, sent_at)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::int4[], $7::text[],
                                  $8::text[], $9::text[], $10::text[], $11::jsonb[], $12::text[], $13::int4[],
                                  $14::text[], $15::timestamptz[], $16::timestamptz[])",
        )
        .bind(col(ms, |m| m.tenant_id))
        .bind(col(ms, |m| m.id))
        .bind(col(ms, |m| m.enrollment_id))
        .bind(col(ms, |m| m.lead_id))
        .bind(col(ms, |m| m.sequence_id))
        .bind(col(ms, |m| m.step_order.map(step_int)))
        .bind(col(ms, |m| m.to.as_str()))
        .bind(col(ms, |m| m.subject.as_str()))
        .bind(col(ms, |m| m.body.as_str()))
        .bind(col(ms, |m| m.html_body.as_deref()))
        .bind(col(ms, |m| serde_json::Value::Object(m.headers.clone())))
        .bind(col(ms, |m| m.status.as_str()))
        .bind(col(ms, |m| m.attempts))
        .bind(col(ms, |m| m.idempotency_key.as_str()))
        .bind(col(ms, |m| ts(m.created_at)))
        .bind(col(ms, |m| opt_ts(m.sent_at)))
        .execute(self.conn())
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn insert_activities(&mut self, acts: &[Activity]) -> Result<()> {
        if acts.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO activities (tenant_id, id, type, lead_id, enrollment_id, sequence_id, step_order, at, details)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::uuid[], $6::uuid[], $7::int4[],
                                  $8::timestamptz[], $9::jsonb[])",
        )
        .bind(col(acts, |a| a.tenant_id))
        .bind(col(acts, |a| a.id))
        .bind(col(acts, |a| a.activity_type.as_str()))
        .bind(col(acts, |a| a.lead_id))
        .bind(col(acts, |a| a.enrollment_id))
        .bind(col(acts, |a| a.sequence_id))
        .bind(col(acts, |a| a.step_order.map(step_int)))
        .bind(col(acts, |a| ts(a.at)))
        .bind(col(acts, |a| a.details.clone()))
        .execute(self.conn())
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn upsert_tasks(&mut self, tasks: &[Task]) -> Result<()> {
        if tasks.is_empty() {
            return Ok(());
        }
        let ts_ = last_by_key(tasks, |t| (t.tenant_id, t.id));
        sqlx::query(
            "INSERT INTO tasks (tenant_id, id, enrollment_id, lead_id, sequence_id, step_order, channel, assignee_id,
               title, status, due_at, completed_at, created_at)
             SELECT tenant_id, id, enrollment_id, lead_id, sequence_id, step_order, channel::nurture_channel,
               assignee_id, title, status, due_at, completed_at, created_at
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::int4[], $7::text[],
                         $8::uuid[], $9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[],
                         $13::timestamptz[])
               AS v(tenant_id, id, enrollment_id, lead_id, sequence_id, step_order, channel, assignee_id, title,
                    status, due_at, completed_at, created_at)
             ON CONFLICT (tenant_id, id) DO UPDATE SET status = excluded.status, completed_at = excluded.completed_at,
               assignee_id = excluded.assignee_id, title = excluded.title",
        )
        .bind(col(&ts_, |t| t.tenant_id))
        .bind(col(&ts_, |t| t.id))
        .bind(col(&ts_, |t| t.enrollment_id))
        .bind(col(&ts_, |t| t.lead_id))
        .bind(col(&ts_, |t| t.sequence_id))
        .bind(col(&ts_, |t| step_int(t.step_order)))
        .bind(col(&ts_, |t| t.channel.as_str()))
        .bind(col(&ts_, |t| t.assignee_id))
        .bind(col(&ts_, |t| t.title.as_str()))
        .bind(col(&ts_, |t| t.status.as_str()))
        .bind(col(&ts_, |t| ts(t.due_at)))
        .bind(col(&ts_, |t| opt_ts(t.completed_at)))
        .bind(col(&ts_, |t| ts(t.created_at)))
        .execute(self.conn())
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn upsert_approvals(&mut self, approvals: &[Approval]) -> Result<()> {
        if approvals.is_empty() {
            return Ok(());
        }
        let aps = last_by_key(approvals, |a| (a.tenant_id, a.id));
        sqlx::query(
            "INSERT INTO approvals (tenant_id, id, enrollment_id, lead_id, sequence_id, step_order, template_id, subject,
               body, html_body, author, status, decided_by, decided_at, decision_reason, created_at, updated_at)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::int4[], $7::text[],
                                  $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::uuid[],
                                  $14::timestamptz[], $15::text[], $16::timestamptz[], $17::timestamptz[])
             ON CONFLICT (tenant_id, id) DO UPDATE SET subject = excluded.subject, body = excluded.body,
               html_body = excluded.html_body, author = excluded.author, status = excluded.status,
               decided_by = excluded.decided_by, decided_at = excluded.decided_at,
               decision_reason = excluded.decision_reason, updated_at = excluded.updated_at",
        )
        .bind(col(&aps, |a| a.tenant_id))
        .bind(col(&aps, |a| a.id))
        .bind(col(&aps, |a| a.enrollment_id))
        .bind(col(&aps, |a| a.lead_id))
        .bind(col(&aps, |a| a.sequence_id))
        .bind(col(&aps, |a| step_int(a.step_order)))
        .bind(col(&aps, |a| a.template_id.as_ref().map(|t| t.as_str().to_string())))
        .bind(col(&aps, |a| a.subject.as_str()))
        .bind(col(&aps, |a| a.body.as_str()))
        .bind(col(&aps, |a| a.html_body.as_deref()))
        .bind(col(&aps, |a| a.author.as_str()))
        .bind(col(&aps, |a| a.status.as_str()))
        .bind(col(&aps, |a| a.decided_by))
        .bind(col(&aps, |a| opt_ts(a.decided_at)))
        .bind(col(&aps, |a| a.decision_reason.clone()))
        .bind(col(&aps, |a| ts(a.created_at)))
        .bind(col(&aps, |a| ts(a.updated_at)))
        .execute(self.conn())
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Moves each lead's `last_outbound_at` forward (never back), the latest instant winning
    /// when a lead appears more than once.
    async fn touch_outbound(&mut self, touches: &[(TenantId, LeadId, Timestamp)]) -> Result<()> {
        if touches.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE leads AS l SET last_outbound_at = greatest(l.last_outbound_at, v.at)
             FROM (SELECT tenant_id, id, max(at) AS at
                   FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) AS u(tenant_id, id, at)
                   GROUP BY tenant_id, id) AS v
             WHERE l.tenant_id = v.tenant_id AND l.id = v.id",
        )
        .bind(col(touches, |t| t.0))
        .bind(col(touches, |t| t.1))
        .bind(col(touches, |t| ts(t.2)))
        .execute(self.conn())
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn write_lead(&mut self, lead: &Lead, insert: bool) -> Result<()> {
        let sql = if insert {
            format!(
                "INSERT INTO leads ({LEAD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                   $14, $15, $16, $17, $18, $19, $20, $21, $22)"
            )
        } else {
            format!(
                "UPDATE leads SET ({LEAD_COLUMNS}) = ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                   $15, $16, $17, $18, $19, $20, $21, $22)
                 WHERE tenant_id = $1 AND id = $2"
            )
        };
        let l = lead;
        let result = sqlx::query(AssertSqlSafe(sql))
            .bind(l.tenant_id)
            .bind(l.id)
            .bind(l.email.as_str())
            .bind(l.first_name.as_deref())
            .bind(l.last_name.as_deref())
            .bind(l.company.as_deref())
            .bind(l.timezone.as_ref().map(|t| t.as_str()))
            .bind(l.status.as_str())
            .bind(l.score)
            .bind(l.score_band.as_deref())
            .bind(&l.segments)
            .bind(serde_json::Value::Object(l.attributes.clone()))
            .bind(l.owner_id)
            .bind(l.do_not_contact)
            .bind(l.unsubscribed)
            .bind(l.bounced)
            .bind(opt_ts(l.last_reply_at))
            .bind(l.last_reply_sentiment.map(|s| s.as_str()))
            .bind(opt_ts(l.last_engaged_at))
            .bind(opt_ts(l.last_outbound_at))
            .bind(ts(l.created_at))
            .bind(ts(l.updated_at))
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

#[async_trait]
impl Tx for PgTx {
    async fn commit(self: Box<Self>) -> Result<()> {
        // Deferred constraints (the no-gaps trigger) report here.
        self.tx.commit().await.map_err(db)
    }

    async fn insert_tenant(&mut self, t: &Tenant) -> Result<()> {
        sqlx::query("INSERT INTO tenants (id, name, settings, created_at) VALUES ($1, $2, $3, $4)")
            .bind(t.id)
            .bind(&t.name)
            .bind(serde_json::to_value(&t.settings).map_err(Error::store)?)
            .bind(ts(t.created_at))
            .execute(self.conn())
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn get_tenant(&mut self, tenant_id: TenantId) -> Result<Option<Tenant>> {
        let row = sqlx::query("SELECT * FROM tenants WHERE id = $1")
            .bind(tenant_id)
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
        sqlx::query("UPDATE tenants SET settings = $1 WHERE id = $2")
            .bind(serde_json::to_value(settings).map_err(Error::store)?)
            .bind(tenant_id)
            .execute(self.conn())
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn insert_user(&mut self, u: &User) -> Result<()> {
        sqlx::query(
            "INSERT INTO users (tenant_id, id, email, role, password_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(u.tenant_id)
        .bind(u.id)
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
        sqlx::query(
            "INSERT INTO api_keys (tenant_id, id, user_id, prefix, hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(k.tenant_id)
        .bind(k.id)
        .bind(k.user_id)
        .bind(&k.prefix)
        .bind(&k.hash)
        .bind(ts(k.created_at))
        .execute(self.conn())
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn find_api_key(&mut self, prefix: &str) -> Result<Option<ApiKeyRecord>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE prefix = $1")
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
             VALUES ($1, $2, $3, 0, ''::bytea, $4, $5) ON CONFLICT (tenant_id, key) DO NOTHING",
        )
        .bind(tenant)
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
            "SELECT request_hash, status, body, locked_until FROM idempotency_keys WHERE tenant_id = $1 AND key = $2",
        )
        .bind(tenant)
        .bind(key)
        .fetch_optional(self.conn())
        .await
        .map_err(db)?;
        row.map(|r| {
            let request_hash: Vec<u8> = get(&r, "request_hash")?;
            let status: i32 = get(&r, "status")?;
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
            "UPDATE idempotency_keys SET locked_until = $1
             WHERE tenant_id = $2 AND key = $3 AND status = 0 AND (locked_until IS NULL OR locked_until <= $4)",
        )
        .bind(ts(lease_until))
        .bind(tenant)
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
            "UPDATE idempotency_keys SET status = $1, body = $2, locked_until = NULL
             WHERE tenant_id = $3 AND key = $4 AND request_hash = $5 AND status = 0",
        )
        .bind(saved.status as i32)
        .bind(&saved.body)
        .bind(tenant)
        .bind(key)
        .bind(&saved.request_hash)
        .execute(self.conn())
        .await
        .map_err(db)?;
        Ok(())
    }
    async fn release_idempotency_key(&mut self, tenant: TenantId, key: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND status = 0",
        )
        .bind(tenant)
        .bind(key)
        .execute(self.conn())
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn upsert_template(&mut self, t: &Template) -> Result<()> {
        sqlx::query(
            "INSERT INTO templates (tenant_id, id, name, subject, body, html_body, pre_approved, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (tenant_id, id) DO UPDATE SET name = excluded.name, subject = excluded.subject,
               body = excluded.body, html_body = excluded.html_body, pre_approved = excluded.pre_approved,
               updated_at = excluded.updated_at",
        )
        .bind(t.tenant_id)
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
        let row = sqlx::query("SELECT * FROM templates WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(tid.as_str())
            .fetch_optional(self.conn())
            .await
            .map_err(db)?;
        row.as_ref().map(template).transpose()
    }

    async fn list_templates(&mut self, tenant: TenantId, page: &Page) -> Result<Listed<Template>> {
        // Template ids are COLLATE "C": byte order, as SQLite compares them.
        let rows = sqlx::query(
            "SELECT * FROM templates WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(tenant)
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
        let rows = sqlx::query("SELECT * FROM templates WHERE tenant_id = ANY($1::uuid[])")
            .bind(tenants)
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
               version, created_at, updated_at)
             VALUES ($1, $2, $3, $4::nurture_sequence_status, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(s.tenant_id)
        .bind(s.id)
        .bind(&s.name)
        .bind(s.status.as_str())
        .bind(s.entry_rules.as_ref().map(|r| r.to_json()))
        .bind(s.exit_rules.to_json())
        .bind(s.created_by)
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
            "UPDATE lead_nurture_sequences SET name = $1, status = $2::nurture_sequence_status, entry_rules = $3,
               exit_rules = $4, priority = $5, version = $6, updated_at = $7
             WHERE tenant_id = $8 AND id = $9 AND version = $10",
        )
        .bind(&s.name)
        .bind(s.status.as_str())
        .bind(s.entry_rules.as_ref().map(|r| r.to_json()))
        .bind(s.exit_rules.to_json())
        .bind(s.priority)
        .bind(s.version)
        .bind(ts(s.updated_at))
        .bind(s.tenant_id)
        .bind(s.id)
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
            sqlx::query("SELECT * FROM lead_nurture_sequences WHERE tenant_id = $1 AND id = $2")
                .bind(tenant)
                .bind(sid)
                .fetch_optional(self.conn())
                .await
                .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let mut seqs = vec![sequence(&row)?];
        self.steps_for(&mut seqs).await?;
        Ok(seqs.pop())
    }

    async fn list_sequences(&mut self, tenant: TenantId, page: &Page) -> Result<Listed<Sequence>> {
        let rows = sqlx::query(
            "SELECT * FROM lead_nurture_sequences WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
             ORDER BY id LIMIT $3",
        )
        .bind(tenant)
        .bind(id_after(page)?)
        .bind(page.limit as i64 + 1)
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        let mut items = rows.iter().map(sequence).collect::<Result<Vec<_>>>()?;
        self.steps_for(&mut items).await?;
        Ok(page_of(items, page, |s| id(s.id)))
    }

    async fn sequences_by_id(
        &mut self,
        keys: &[(TenantId, SequenceId)],
    ) -> Result<HashMap<SequenceId, Sequence>> {
        let (tenants, ids) = pairs(keys);
        let rows = sqlx::query(
            "SELECT s.* FROM lead_nurture_sequences s
             WHERE (s.tenant_id, s.id) IN (SELECT * FROM unnest($1::uuid[], $2::uuid[]))",
        )
        .bind(tenants)
        .bind(ids)
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        let mut seqs = rows.iter().map(sequence).collect::<Result<Vec<_>>>()?;
        self.steps_for(&mut seqs).await?;
        Ok(seqs.into_iter().map(|s| (s.id, s)).collect())
    }

    async fn auto_enroll_sequences(&mut self, tenant: TenantId) -> Result<Vec<Sequence>> {
        let rows = sqlx::query(
            "SELECT * FROM lead_nurture_sequences WHERE tenant_id = $1 AND status = 'active' AND entry_rules IS NOT NULL
             ORDER BY priority DESC, created_at, id",
        )
        .bind(tenant)
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        let mut seqs = rows.iter().map(sequence).collect::<Result<Vec<_>>>()?;
        self.steps_for(&mut seqs).await?;
        Ok(seqs)
    }

    async fn tenants_with_auto_enroll(&mut self) -> Result<Vec<TenantId>> {
        let rows = sqlx::query(
            "SELECT DISTINCT tenant_id FROM lead_nurture_sequences WHERE status = 'active' AND entry_rules IS NOT NULL
             ORDER BY tenant_id",
        )
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        rows.iter().map(|r| get(r, "tenant_id")).collect()
    }

    async fn sequence_stats(&mut self, tenant: TenantId, sid: SequenceId) -> Result<SequenceStats> {
        let mut stats = SequenceStats::default();
        // SQLite orders these groups as text with NULLs first; so does this (an enum would
        // otherwise order by declaration, and PostgreSQL puts NULLs last).
        let rows = sqlx::query(
            "SELECT status::text AS status, exit_reason, count(*) AS n FROM lead_nurture_enrollments
             WHERE tenant_id = $1 AND sequence_id = $2 GROUP BY status, exit_reason
             ORDER BY status::text COLLATE \"C\", exit_reason COLLATE \"C\" NULLS FIRST",
        )
        .bind(tenant)
        .bind(sid)
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        for r in &rows {
            let status = get_label(r, "status")?;
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
             WHERE tenant_id = $1 AND sequence_id = $2 AND type IN ('nurture_step_executed', 'nurture_step_skipped')
             GROUP BY step_order ORDER BY step_order NULLS FIRST",
        )
        .bind(tenant)
        .bind(sid)
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        for r in &rows {
            let step: Option<i32> = get(r, "step_order")?;
            stats
                .reached_step
                .push((step.unwrap_or(0).into(), get(r, "n")?));
        }
        Ok(stats)
    }

    async fn insert_lead(&mut self, lead: &Lead) -> Result<()> {
        self.write_lead(lead, true).await
    }

    async fn insert_leads(&mut self, leads: &[Lead]) -> Result<()> {
        if leads.is_empty() {
            return Ok(());
        }
        // A lead's segments are a text[] of their own; arrays of arrays do not unnest row by
        // row, so each list travels as a jsonb array and becomes text[] again in SQL.
        let sql = format!(
            "INSERT INTO leads ({LEAD_COLUMNS})
             SELECT tenant_id, id, email, first_name, last_name, company, timezone, status, score, score_band,
               ARRAY(SELECT jsonb_array_elements_text(segments)), attributes, owner_id, do_not_contact,
               unsubscribed, bounced, last_reply_at, last_reply_sentiment, last_engaged_at, last_outbound_at,
               created_at, updated_at
             FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::text[], $9::int8[], $10::text[], $11::jsonb[], $12::jsonb[], $13::uuid[], $14::bool[],
                         $15::bool[], $16::bool[], $17::timestamptz[], $18::text[], $19::timestamptz[],
                         $20::timestamptz[], $21::timestamptz[], $22::timestamptz[])
               AS v({LEAD_COLUMNS})"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(col(leads, |l| l.tenant_id))
            .bind(col(leads, |l| l.id))
            .bind(col(leads, |l| l.email.as_str()))
            .bind(col(leads, |l| l.first_name.as_deref()))
            .bind(col(leads, |l| l.last_name.as_deref()))
            .bind(col(leads, |l| l.company.as_deref()))
            .bind(col(leads, |l| l.timezone.as_ref().map(|t| t.as_str())))
            .bind(col(leads, |l| l.status.as_str()))
            .bind(col(leads, |l| l.score))
            .bind(col(leads, |l| l.score_band.as_deref()))
            .bind(col(leads, |l| serde_json::json!(l.segments)))
            .bind(col(leads, |l| {
                serde_json::Value::Object(l.attributes.clone())
            }))
            .bind(col(leads, |l| l.owner_id))
            .bind(col(leads, |l| l.do_not_contact))
            .bind(col(leads, |l| l.unsubscribed))
            .bind(col(leads, |l| l.bounced))
            .bind(col(leads, |l| opt_ts(l.last_reply_at)))
            .bind(col(leads, |l| l.last_reply_sentiment.map(|s| s.as_str())))
            .bind(col(leads, |l| opt_ts(l.last_engaged_at)))
            .bind(col(leads, |l| opt_ts(l.last_outbound_at)))
            .bind(col(leads, |l| ts(l.created_at)))
            .bind(col(leads, |l| ts(l.updated_at)))
            .execute(self.conn())
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn update_lead(&mut self, lead: &Lead) -> Result<()> {
        self.write_lead(lead, false).await
    }

    /// Locks the lead's row until the transaction ends (`FOR NO KEY UPDATE`). A lead has no
    /// version column, and commands read a lead, change some fields and write the whole row:
    /// on SQLite the single writer makes that safe, here the lock does, so that e.g. an
    /// unsubscribe is never overwritten by a concurrent score change that read the lead
    /// before it. A read-only transaction only reads it.
    async fn get_lead(&mut self, tenant: TenantId, lid: LeadId) -> Result<Option<Lead>> {
        let sql = if self.read_only {
            "SELECT * FROM leads WHERE tenant_id = $1 AND id = $2"
        } else {
            "SELECT * FROM leads WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE"
        };
        let row = sqlx::query(sql)
            .bind(tenant)
            .bind(lid)
            .fetch_optional(self.conn())
            .await
            .map_err(db)?;
        row.as_ref().map(lead).transpose()
    }

    async fn leads_by_id(&mut self, keys: &[(TenantId, LeadId)]) -> Result<HashMap<LeadId, Lead>> {
        let (tenants, ids) = pairs(keys);
        let rows = sqlx::query(
            "SELECT l.* FROM leads l WHERE (l.tenant_id, l.id) IN (SELECT * FROM unnest($1::uuid[], $2::uuid[]))",
        )
        .bind(tenants)
        .bind(ids)
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        rows.iter().map(|r| lead(r).map(|l| (l.id, l))).collect()
    }

    /// A page of the sweep: the tenant's leads in id order after `after`, walked along the
    /// primary key until `limit` pass. Sequential and bitmap scans are off for the rest of the
    /// (page's) transaction: with statistics that lag behind a bulk import the planner chose a
    /// bitmap scan of every remaining lead and a sort, per page — quadratic in the leads.
    async fn enrollable_leads(
        &mut self,
        tenant: TenantId,
        statuses: &[LeadStatus],
        score_bands: Option<&[String]>,
        after: Option<LeadId>,
        limit: u32,
    ) -> Result<Vec<Lead>> {
        sqlx::raw_sql("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
            .execute(self.conn())
            .await
            .map_err(db)?;
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let mut qb = QueryBuilder::<Postgres>::new("SELECT l.* FROM leads l WHERE l.tenant_id = ");
        qb.push_bind(tenant);
        if let Some(after) = after {
            qb.push(" AND l.id > ").push_bind(after);
        }
        qb.push(" AND NOT l.do_not_contact AND NOT l.unsubscribed AND NOT l.bounced");
        qb.push(" AND l.status = ANY(")
            .push_bind(statuses)
            .push("::text[])");
        if let Some(bands) = score_bands {
            qb.push(" AND l.score_band = ANY(")
                .push_bind(bands.to_vec())
                .push("::text[])");
        }
        // `OFFSET 0` keeps the check a per-lead probe of the one-live-per-lead index. As a
        // join, the planner may scan every enrollment of the tenant once per lead when its
        // statistics are stale (a bulk load that autovacuum has not analyzed yet): quadratic.
        qb.push(
            " AND NOT EXISTS (SELECT 1 FROM lead_nurture_enrollments e WHERE e.tenant_id = l.tenant_id
               AND e.lead_id = l.id AND e.status IN ('active', 'paused') OFFSET 0)",
        );
        qb.push(" ORDER BY l.id LIMIT ").push_bind(limit as i64);
        let rows = self.fetch_all(&mut qb).await?;
        rows.iter().map(lead).collect()
    }

    /// One probe of messages_by_lead per lead: the `ARRAY(...)` subquery runs per key with
    /// both key columns bound, whatever the planner believes of the table. (As a join or an
    /// `= ANY` filter, a stale histogram of `created_at` — every message is newer than the
    /// last ANALYZE while the outbox fills — made it scan the tenant's whole outbox per batch.)
    async fn outbound_since(
        &mut self,
        leads: &[(TenantId, LeadId)],
        since: Timestamp,
    ) -> Result<HashMap<LeadId, Vec<Timestamp>>> {
        let (tenants, ids) = pairs(leads);
        let rows = sqlx::query(
            "SELECT k.lead_id, ARRAY(SELECT m.created_at FROM messages m
                 WHERE m.tenant_id = k.tenant_id AND m.lead_id = k.lead_id AND m.created_at > $3) AS sent
             FROM unnest($1::uuid[], $2::uuid[]) AS k(tenant_id, lead_id)",
        )
        .bind(tenants)
        .bind(ids)
        .bind(ts(since))
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        let mut out: HashMap<LeadId, Vec<Timestamp>> = HashMap::new();
        for r in &rows {
            let sent: Vec<Ts> = get(r, "sent")?;
            if !sent.is_empty() {
                // A lead asked for twice has the same messages: keep one copy.
                out.entry(get(r, "lead_id")?)
                    .or_insert_with(|| sent.into_iter().map(|t| t.0).collect());
            }
        }
        Ok(out)
    }

    async fn get_enrollment(
        &mut self,
        tenant: TenantId,
        eid: EnrollmentId,
    ) -> Result<Option<Enrollment>> {
        let row =
            sqlx::query("SELECT * FROM lead_nurture_enrollments WHERE tenant_id = $1 AND id = $2")
                .bind(tenant)
                .bind(eid)
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
            "SELECT * FROM lead_nurture_enrollments WHERE tenant_id = $1 AND lead_id = $2 AND status IN ('active', 'paused')",
        )
        .bind(tenant)
        .bind(lid)
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
            "SELECT * FROM lead_nurture_enrollments WHERE tenant_id = $1 AND lead_id = $2 AND sequence_id = $3
               AND ended_at > $4
             ORDER BY ended_at DESC LIMIT 1",
        )
        .bind(tenant)
        .bind(lid)
        .bind(sid)
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
        let rows =
            sqlx::query("SELECT lead_id, sequence_id FROM lead_nurture_enrollments WHERE tenant_id = $1 AND ended_at > $2")
                .bind(tenant)
                .bind(ts(since))
                .fetch_all(self.conn())
                .await
                .map_err(db)?;
        rows.iter()
            .map(|r| Ok((get(r, "lead_id")?, get(r, "sequence_id")?)))
            .collect()
    }
    async fn list_enrollments(
        &mut self,
        tenant: TenantId,
        f: &EnrollmentFilter,
        page: &Page,
    ) -> Result<Listed<Enrollment>> {
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT * FROM lead_nurture_enrollments WHERE tenant_id = ",
        );
        qb.push_bind(tenant);
        if let Some(l) = f.lead_id {
            qb.push(" AND lead_id = ").push_bind(l);
        }
        if let Some(s) = f.sequence_id {
            qb.push(" AND sequence_id = ").push_bind(s);
        }
        if let Some(st) = f.status {
            qb.push(" AND status = ")
                .push_bind(st.as_str())
                .push("::nurture_enrollment_status");
        }
        self.id_page(&mut qb, page, enrollment, |e| e.id).await
    }

    async fn live_enrollments_of_sequence(
        &mut self,
        tenant: TenantId,
        sid: SequenceId,
    ) -> Result<Vec<Enrollment>> {
        let rows = sqlx::query(
            "SELECT * FROM lead_nurture_enrollments WHERE tenant_id = $1 AND sequence_id = $2
               AND status IN ('active', 'paused')",
        )
        .bind(tenant)
        .bind(sid)
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        rows.iter().map(enrollment).collect()
    }

    /// Claims due enrollments for this transaction: `FOR UPDATE SKIP LOCKED` locks the rows
    /// and passes over any that another worker holds, so concurrent workers get disjoint
    /// batches without waiting for each other. The row locks are the claim: they last until
    /// this transaction ends, or until its session does (a worker that dies, or hangs past the
    /// lease, see `SESSION_SETUP`). Nothing is written to claim: stamping the rows would write
    /// every claimed enrollment twice per step (SQLite's `claimed_until` column stays NULL here).
    async fn claim_due(&mut self, until: Timestamp, limit: u32) -> Result<Vec<Enrollment>> {
        // The rest of this transaction (the batch) reads and writes its rows by key: this
        // claim walks the due index in order, every other statement probes a primary key or a
        // per-lead index. Left to itself the planner may choose scans of whole tables, sorted
        // or hashed, once per batch (quadratic in the backlog) when its statistics lag behind
        // a bulk change (a sweep that enrolled 300,000 leads, an outbox that was empty an hour
        // ago), and it cannot see that the system scope's row-level-security predicate is true
        // for every row. `SET LOCAL`: gone at commit or rollback.
        sqlx::raw_sql(
            "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;
             SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off",
        )
        .execute(self.conn())
        .await
        .map_err(db)?;
        let rows = sqlx::query(AssertSqlSafe(format!("SELECT e.* {CLAIM_DUE}")))
            .bind(ts(until))
            .bind(limit as i64)
            .fetch_all(self.conn())
            .await
            .map_err(db)?;
        let mut claimed = rows.iter().map(enrollment).collect::<Result<Vec<_>>>()?;
        // Oldest due first (the order is the query's; sorting again costs nothing and keeps
        // the batch's order independent of the plan).
        claimed.sort_by_key(|e| (e.next_step_on, e.id));
        Ok(claimed)
    }

    /// A slot is one of `slots` transaction-scoped advisory locks (`BATCH_SLOT_LOCKS`, 0..slots)
    /// of this database: released at commit or rollback, and by the server when the session
    /// dies, so a crashed worker never keeps one. The connection tries every slot once,
    /// starting from its own (its backend pid modulo `slots`, which spreads the connections
    /// over the slots), and when all are taken queues on its own in the server's lock
    /// manager: no polling, and the waiters of a slot enter in the order they came. A slot
    /// that frees while its neighbour's waiters queue elsewhere goes to the next batch that
    /// tries (workers beyond the slots keep coming round), so no slot stays idle for long.
    async fn enter_batch_slot(&mut self, slots: u32) -> Result<()> {
        let slots = slots.clamp(1, i32::MAX as u32) as i32;
        let entered: Option<i32> = sqlx::query_scalar(
            // Rows are filtered one at a time, so LIMIT 1 stops at the first slot taken.
            "SELECT slot FROM (SELECT (pg_backend_pid() + g) % $1 AS slot
                                FROM generate_series(0, $1 - 1) AS g) AS slots
             WHERE pg_try_advisory_xact_lock($2, slot)
             LIMIT 1",
        )
        .bind(slots)
        .bind(BATCH_SLOT_LOCKS)
        .fetch_optional(self.conn())
        .await
        .map_err(db)?;
        if entered.is_some() {
            return Ok(());
        }
        let waited = sqlx::query("SELECT pg_advisory_xact_lock($2, pg_backend_pid() % $1)")
            .bind(slots)
            .bind(BATCH_SLOT_LOCKS)
            .execute(self.conn())
            .await;
        match waited {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some(QUERY_CANCELED) => {
                Err(Error::store(format!(
                    "no scheduler batch slot came free within the statement timeout: {slots} \
                     batches at once are running elsewhere (raise --max-concurrent-batches, \
                     or run fewer workers)"
                )))
            }
            Err(e) => Err(db(e)),
        }
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
             WHERE e.status = 'active' AND e.next_step_on <= $1 AND EXISTS (SELECT 1 FROM lead_nurture_sequences s
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
        let row = sqlx::query("SELECT * FROM approvals WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(aid)
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
        let mut qb = QueryBuilder::<Postgres>::new("SELECT * FROM approvals WHERE tenant_id = ");
        qb.push_bind(tenant);
        if let Some(st) = status {
            qb.push(" AND status = ").push_bind(st.as_str());
        }
        self.id_page(&mut qb, page, approval, |a| a.id).await
    }

    async fn approvals_by_id(
        &mut self,
        keys: &[(TenantId, ApprovalId)],
    ) -> Result<HashMap<ApprovalId, Approval>> {
        let (tenants, ids) = pairs(keys);
        let rows = sqlx::query(
            "SELECT a.* FROM approvals a WHERE (a.tenant_id, a.id) IN (SELECT * FROM unnest($1::uuid[], $2::uuid[]))",
        )
        .bind(tenants)
        .bind(ids)
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| approval(r).map(|a| (a.id, a)))
            .collect()
    }

    async fn get_task(&mut self, tenant: TenantId, tid: TaskId) -> Result<Option<Task>> {
        let row = sqlx::query("SELECT * FROM tasks WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(tid)
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
        let mut qb = QueryBuilder::<Postgres>::new("SELECT * FROM tasks WHERE tenant_id = ");
        qb.push_bind(tenant);
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
        let rows = sqlx::query("SELECT * FROM approvals WHERE tenant_id = $1 AND enrollment_id = $2 AND status = 'pending'")
            .bind(tenant)
            .bind(eid)
            .fetch_all(self.conn())
            .await
            .map_err(db)?;
        let approvals = rows.iter().map(approval).collect::<Result<Vec<_>>>()?;
        let rows = sqlx::query(
            "SELECT * FROM tasks WHERE tenant_id = $1 AND enrollment_id = $2 AND status = 'open'",
        )
        .bind(tenant)
        .bind(eid)
        .fetch_all(self.conn())
        .await
        .map_err(db)?;
        let tasks = rows.iter().map(task).collect::<Result<Vec<_>>>()?;
        Ok((approvals, tasks))
    }

    async fn get_message(&mut self, tenant: TenantId, mid: MessageId) -> Result<Option<Message>> {
        let row = sqlx::query("SELECT * FROM messages WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(mid)
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
        let mut qb = QueryBuilder::<Postgres>::new("SELECT * FROM messages WHERE tenant_id = ");
        qb.push_bind(tenant);
        if let Some(l) = f.lead_id {
            qb.push(" AND lead_id = ").push_bind(l);
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
        let mut qb = QueryBuilder::<Postgres>::new("SELECT * FROM activities WHERE tenant_id = ");
        qb.push_bind(tenant);
        if let Some(l) = f.lead_id {
            qb.push(" AND lead_id = ").push_bind(l);
        }
        if let Some(e) = f.enrollment_id {
            // Reached through activities_by_lead: an enrollment's activities are its lead's
            // (migration 0002 keeps no index per enrollment).
            qb.push(" AND enrollment_id = ").push_bind(e);
            qb.push(
                " AND lead_id = (SELECT lead_id FROM lead_nurture_enrollments WHERE tenant_id = ",
            )
            .push_bind(tenant)
            .push(" AND id = ")
            .push_bind(e)
            .push(")");
        }
        if let Some(t) = f.activity_type {
            qb.push(" AND type = ").push_bind(t.as_str());
        }
        if let Some(after) = &page.after {
            // Key: "<at micros>:<id>", the position in (at, id) order (the same keys as SQLite).
            let (at, aid) = after.split_once(':').ok_or_else(bad_cursor)?;
            let at: i64 = at.parse().map_err(|_| bad_cursor())?;
            let at = Timestamp::from_microsecond(at).map_err(|_| bad_cursor())?;
            let aid = Uuid::parse_str(aid).map_err(|_| bad_cursor())?;
            qb.push(" AND (at, id) > (")
                .push_bind(ts(at))
                .push(", ")
                .push_bind(aid)
                .push(")");
        }
        qb.push(" ORDER BY at, id LIMIT ")
            .push_bind(page.limit as i64 + 1);
        let rows = self.fetch_all(&mut qb).await?;
        let items = rows.iter().map(activity).collect::<Result<Vec<_>>>()?;
        Ok(page_of(items, page, |a| {
            format!("{}:{}", a.at.as_microsecond(), id(a.id))
        }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_appears_in_messages() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/nurture"),
            "postgres://app:***@db:5432/nurture"
        );
        assert_eq!(
            redact_url("postgres://app:p@ss@db/x?sslmode=require"),
            "postgres://app:***@db/x?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432"),
            "postgres://postgres@127.0.0.1:5432"
        );
        assert_eq!(
            redact_url("postgres://127.0.0.1/x"),
            "postgres://127.0.0.1/x"
        );
    }

    #[test]
    fn an_upsert_keeps_the_last_row_of_a_key() {
        let (t, a, b) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let rows = [(t, a, 1), (t, b, 2), (t, a, 3)];
        let kept: Vec<i32> = last_by_key(&rows, |r| (r.0, r.1))
            .iter()
            .map(|r| r.2)
            .collect();
        assert_eq!(kept, vec![3, 2]);
    }
}
