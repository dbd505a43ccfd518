//! `nurture bench`: builds a database of N leads with 10 active sequences and measures the
//! engine doing its real work (issue #2, "Figures"): one auto-enrollment pass over all leads, and
//! durable step executions, each the full procedure (reload and re-check the lead, exits, cap
//! and window, render, outbox row, activity rows, pointer). It prints figures; nothing asserts
//! them.
//!
//! SQLite (the default): a temporary file, one scheduler. PostgreSQL (`--backend postgres`,
//! issue #4): a fresh database `nurture_bench_<id>` on the server `NURTURE_BENCH_PG` names
//! (default `postgres://postgres@127.0.0.1:5432`), dropped afterwards, and `--workers N`
//! schedulers, each an engine with its own connection pool, draining the same due set at once
//! as N worker processes would.
//!
//! `--reference` adds the same work in raw SQL on the same machine, the ceiling the engine's
//! figures are read against (`bench/reference.rs` for SQLite, `bench/reference_postgres.rs`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use jiff::{SignedDuration, Timestamp};
use nurture_core::clock::ManualClock;
use nurture_core::domain::*;
use nurture_core::engine::*;
use nurture_core::rules::{EntryRules, ExitRules};
use nurture_core::store::Store;
use nurture_core::{Engine, Principal};
use serde::Serialize;
use serde_json::json;

use crate::cli::{Backend, BenchArgs};

mod reference;
mod reference_postgres;

const SEQUENCES: usize = 10;
/// Every sequence's steps: three emails, each this many hours after the one before.
const STEP_DELAYS_HOURS: [i64; 3] = [0, 48, 96];
/// Leads written per transaction while building the database.
const INSERT_CHUNK: usize = 20_000;

/// The variable naming the PostgreSQL server `--backend postgres` measures on.
const BENCH_PG_VAR: &str = "NURTURE_BENCH_PG";
const DEFAULT_BENCH_PG: &str = "postgres://postgres@127.0.0.1:5432";

#[derive(Debug, Serialize)]
struct Figures {
    backend: &'static str,
    leads: u32,
    sequences: usize,
    batch_size: u32,
    /// Schedulers draining the due set at once (always 1 on SQLite, which has one writer).
    workers: u32,
    /// Batches allowed to run at once across those schedulers (`--max-concurrent-batches`).
    max_concurrent_batches: u32,
    setup_seconds: f64,
    enrolled: u64,
    enroll_pass_seconds: f64,
    /// Durable step executions per second over both rounds.
    steps_per_sec: f64,
    steps: u64,
    step_seconds: f64,
    /// Round 1: every enrollment's first email. Round 2: the second email, 48 h later, with the
    /// frequency cap reading the first.
    round_steps_per_sec: [f64; 2],
    /// Emails queued in the outbox.
    messages: u64,
    peak_rss_mb: f64,
    /// `--reference`: the third emails, in raw SQL on the same database (see `bench/reference.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    reference_steps_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference_steps: Option<u64>,
    /// `--reference` (SQLite): the enrollment pass in raw SQL, on a second database built alike.
    #[serde(skip_serializing_if = "Option::is_none")]
    reference_enroll_pass_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference_enrolled: Option<u64>,
}

/// The instant the bench's simulated time starts at.
fn start() -> Timestamp {
    "2026-03-02T10:00:00Z".parse().expect("a valid timestamp")
}

/// When the step after `rounds` rounds of emails falls due.
fn due_after_rounds(rounds: usize) -> Timestamp {
    start() + SignedDuration::from_hours(STEP_DELAYS_HOURS[..=rounds].iter().sum())
}

/// Peak resident memory of this process so far (Linux `VmHWM`).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let figures = match args.backend {
        Backend::Sqlite => {
            if args.workers != 1 {
                bail!("--workers: SQLite has one writer, so its bench runs one scheduler");
            }
            sqlite(args).await?
        }
        Backend::Postgres => postgres(args).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    }
    Ok(())
}

async fn sqlite(args: &BenchArgs) -> anyhow::Result<Figures> {
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let path = dir.join(format!("bench-{}.db", new_id().simple()));
    let store = crate::ready_store(&sqlite_url(&path)).await?;
    let mut figures = measure(store, args, Vec::new()).await;
    if let (Ok(f), true) = (&mut figures, args.reference) {
        match reference_rounds(&dir, &path, args).await {
            Ok((round, pass)) => {
                f.reference_steps_per_sec = Some(round.steps as f64 / round.seconds);
                f.reference_steps = Some(round.steps);
                f.reference_enroll_pass_seconds = Some(pass.seconds);
                f.reference_enrolled = Some(pass.steps);
            }
            Err(e) => figures = Err(e),
        }
    }
    remove_sqlite_files(&path);
    figures
}

/// `--reference`: the third emails in raw SQL on the engine's database at `path` (whose store
/// is closed by now), then the enrollment pass in raw SQL on a second database built alike in
/// `dir` (it needs leads nobody has enrolled), removed afterwards.
async fn reference_rounds(
    dir: &std::path::Path,
    path: &std::path::Path,
    args: &BenchArgs,
) -> anyhow::Result<(reference::ReferenceRound, reference::ReferenceRound)> {
    let (p, batch) = (path.to_path_buf(), args.batch_size);
    let window = nurture_core::settings::TenantSettings::default().message_window_hours as i64;
    let round = tokio::task::spawn_blocking(move || {
        reference::sqlite_round(&p, due_after_rounds(2), batch, window)
    })
    .await??;

    let ref_path = dir.join(format!("bench-reference-{}.db", new_id().simple()));
    let store = crate::ready_store(&sqlite_url(&ref_path)).await?;
    drop(prepare(store, args).await?);
    let p = ref_path.clone();
    let pass =
        tokio::task::spawn_blocking(move || reference::sqlite_enroll_pass(&p, start(), SWEEP_PAGE))
            .await;
    remove_sqlite_files(&ref_path);
    Ok((round, pass??))
}

fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite://{}", path.display())
}

fn remove_sqlite_files(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// Creates `nurture_bench_<id>` on the bench server, measures on it with `--workers` stores,
/// and drops it again (also when the measurement fails: the guard drops it).
async fn postgres(args: &BenchArgs) -> anyhow::Result<Figures> {
    use nurture_postgres::PgStore;
    use nurture_postgres::testing::TestDatabase;

    if args.workers == 0 {
        bail!("--workers: at least one");
    }
    let url = std::env::var(BENCH_PG_VAR).unwrap_or_else(|_| DEFAULT_BENCH_PG.to_string());
    let db = TestDatabase::create_on(&url, "nurture_bench")
        .await
        .with_context(|| format!("{BENCH_PG_VAR}: cannot create the bench database"))?;
    let store = Arc::new(db.store().await?);
    let mut workers: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..args.workers {
        workers.push(Arc::new(PgStore::connect_with(db.options()).await?));
    }
    let mut figures = measure(store, args, workers).await;
    if let (Ok(f), true) = (&mut figures, args.reference) {
        // As many connections as the engine's batches could run at once.
        let connections = args.workers.min(args.max_concurrent_batches);
        let window = nurture_core::settings::TenantSettings::default().message_window_hours as i64;
        match reference_postgres::postgres_round(
            &db.options(),
            due_after_rounds(2),
            args.batch_size,
            window,
            connections,
        )
        .await
        {
            Ok(round) => {
                f.reference_steps_per_sec = Some(round.steps as f64 / round.seconds);
                f.reference_steps = Some(round.steps);
            }
            Err(e) => figures = Err(e),
        }
    }
    drop(db);
    figures
}

/// Builds the data on `store`, times one sweep, then times both rounds of steps. The steps run
/// on `store`'s engine alone when `workers` is empty (the SQLite figure), otherwise on one
/// engine per store in `workers`, all at once. Nothing refreshes PostgreSQL's statistics in
/// between: the figures are those of a database that has just been loaded.
async fn measure(
    store: Arc<dyn Store>,
    args: &BenchArgs,
    workers: Vec<Arc<dyn Store>>,
) -> anyhow::Result<Figures> {
    let t0 = start();
    let (engine, clock, setup_seconds) = prepare(store.clone(), args).await?;

    let pass = Instant::now();
    let enrolled = engine.sweep(t0).await?;
    let enroll_pass_seconds = pass.elapsed().as_secs_f64();

    let config = scheduler_config(args);
    let schedulers: Vec<Arc<Engine>> = workers
        .into_iter()
        .map(|w| Arc::new(Engine::with_manual_clock(w, clock.clone()).with_config(config.clone())))
        .collect();
    let n_workers = schedulers.len().max(1) as u32;

    let mut round_steps_per_sec = [0.0; 2];
    let mut steps = 0;
    let mut messages = 0;
    let mut step_seconds = 0.0;
    for (round, at) in [due_after_rounds(0), due_after_rounds(1)]
        .into_iter()
        .enumerate()
    {
        clock.set(at);
        let started = Instant::now();
        let reports = if schedulers.is_empty() {
            vec![engine.run_due(at, at).await?]
        } else {
            // Every scheduler drains the same due set at once, as worker processes would.
            let tasks: Vec<_> = schedulers
                .iter()
                .map(|s| {
                    let s = s.clone();
                    tokio::spawn(async move { s.run_due(at, at).await })
                })
                .collect();
            let mut reports = Vec::new();
            for t in tasks {
                reports.push(t.await??);
            }
            reports
        };
        let secs = started.elapsed().as_secs_f64();
        let round_steps: u64 = reports.iter().map(|r| r.steps).sum();
        round_steps_per_sec[round] = round_steps as f64 / secs;
        steps += round_steps;
        messages += reports
            .iter()
            .filter_map(|r| r.outcomes.get("email:nurture_step_executed"))
            .sum::<u64>();
        step_seconds += secs;
    }
    Ok(Figures {
        backend: store.backend(),
        leads: args.leads,
        sequences: SEQUENCES,
        batch_size: args.batch_size,
        workers: n_workers,
        max_concurrent_batches: args.max_concurrent_batches,
        setup_seconds,
        enrolled,
        enroll_pass_seconds,
        steps_per_sec: steps as f64 / step_seconds,
        steps,
        step_seconds,
        round_steps_per_sec,
        messages,
        peak_rss_mb: peak_rss_mb(),
        reference_steps_per_sec: None,
        reference_steps: None,
        reference_enroll_pass_seconds: None,
        reference_enrolled: None,
    })
}

fn scheduler_config(args: &BenchArgs) -> SchedulerConfig {
    SchedulerConfig {
        batch_size: args.batch_size,
        max_concurrent_batches: args.max_concurrent_batches,
        ..Default::default()
    }
}

/// A tenant, its sequences and `--leads` leads on `store`, nobody enrolled yet; returns the
/// engine on the bench's manual clock, the clock, and how long the leads took to write.
async fn prepare(
    store: Arc<dyn Store>,
    args: &BenchArgs,
) -> anyhow::Result<(Engine, Arc<ManualClock>, f64)> {
    let t0 = start();
    let clock = Arc::new(ManualClock::new(t0));
    let engine =
        Engine::with_manual_clock(store.clone(), clock.clone()).with_config(scheduler_config(args));
    let (_, key) = engine.create_tenant("bench").await?;
    let p = engine
        .authenticate(&key)
        .await?
        .expect("a fresh key authenticates");
    let setup = Instant::now();
    build(&engine, store.as_ref(), p, args.leads, t0).await?;
    Ok((engine, clock, setup.elapsed().as_secs_f64()))
}

/// Ten sequences, each for one segment, and N leads spread over statuses, bands and segments
/// like a CRM's: about a third of them match a sequence.
async fn build(
    engine: &Engine,
    store: &dyn Store,
    p: Principal,
    leads: u32,
    now: Timestamp,
) -> anyhow::Result<()> {
    for i in 0..SEQUENCES {
        let id = TemplateId::parse(&format!("t{i}"))?;
        let input = TemplateInput {
            id: id.clone(),
            name: format!("Template {i}"),
            subject: format!("{{{{ first_name }}}}, idea #{i} for {{{{ company }}}}"),
            body: "Hi {{ first_name }},\n\nHere is something for {{ company }}.\n\nBest".into(),
            html_body: None,
            pre_approved: false,
        };
        engine.put_template(p, input, false).await?;
        let step = |order: i64, delay: i64| -> anyhow::Result<Step> {
            Ok(Step {
                step_order: StepOrder::parse(order)?,
                channel: Channel::Email,
                delay_hours: DelayHours::parse(delay)?,
                template_id: Some(id.clone()),
                requires_human_approval: false,
                conditions: None,
            })
        };
        let input = SequenceInput {
            name: format!("Segment {i}"),
            priority: 0,
            entry_rules: Some(
                EntryRules::parse(&json!({"segments_any": [format!("seg{i}")]}), "entry_rules")
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?,
            ),
            exit_rules: ExitRules::default(),
            steps: STEP_DELAYS_HOURS
                .iter()
                .zip(1..)
                .map(|(delay, order)| step(order, *delay))
                .collect::<anyhow::Result<_>>()?,
        };
        let s = engine.create_sequence(p, input).await?;
        engine.activate_sequence(p, s.id).await?;
    }
    let statuses = [
        LeadStatus::New,
        LeadStatus::Contacted,
        LeadStatus::Qualified,
        LeadStatus::Qualified,
        LeadStatus::Converted,
    ];
    let bands = ["cold", "warm", "warm", "hot", "cold"];
    let mut n = 0u32;
    while n < leads {
        let chunk: Vec<Lead> = (n..leads.min(n + INSERT_CHUNK as u32))
            .map(|i| {
                let k = i as usize;
                Ok(Lead {
                    first_name: Some(format!("Lead{i}")),
                    last_name: Some("Bench".into()),
                    company: Some(format!("Company {}", k % 997)),
                    status: statuses[k % statuses.len()],
                    score: (k % 100) as i64,
                    score_band: Some(bands[(k / 5) % bands.len()].into()),
                    segments: vec![format!("seg{}", k % SEQUENCES)],
                    do_not_contact: k.is_multiple_of(50),
                    ..Lead::new(
                        p.tenant_id,
                        EmailAddress::parse(&format!("lead{i}@example.com"))?,
                        now,
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let mut tx = store
            .begin(nurture_core::store::Scope::Tenant(p.tenant_id))
            .await?;
        tx.insert_leads(&chunk).await?;
        tx.commit().await?;
        n += chunk.len() as u32;
    }
    Ok(())
}
