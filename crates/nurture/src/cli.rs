//! The command line. Every flag can also come from an environment variable; `--help` is made
//! from these doc comments.

use clap::{Args, Parser, Subcommand, ValueEnum};
use jiff::Timestamp;
use nurture_core::engine::DEFAULT_MAX_CONCURRENT_BATCHES;

/// Nurture: a multi-tenant engine that runs lead nurture sequences.
#[derive(Debug, Parser)]
#[command(name = "nurture", version, about, long_about = None)]
pub struct Cli {
    /// The database: sqlite://PATH (embedded, the default) or postgres://USER@HOST/DB.
    #[arg(
        long,
        global = true,
        env = "NURTURE_DATABASE_URL",
        default_value = "sqlite://nurture.db"
    )]
    pub database: String,

    /// Log format on standard error.
    #[arg(long, global = true, env = "NURTURE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the database migrations that are not applied yet (every command also does this on start).
    Migrate,
    /// Serve the HTTP API and run the scheduler in one process.
    Serve(ServeArgs),
    /// Run the scheduler only (scale-out: several workers share one database).
    Worker(WorkerArgs),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Create a demo tenant with realistic leads, templates and sequences, simulate a month, and
    /// print a summary.
    Demo(DemoArgs),
    /// Measure the engine: steps per second, one auto-enrollment pass, peak memory.
    Bench(BenchArgs),
}

impl Command {
    /// Commands whose standard output is for machines: keep logs to warnings.
    pub fn is_quiet(&self) -> bool {
        matches!(
            self,
            Command::Tenant(_) | Command::Bench(_) | Command::Migrate
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and its first API key; prints {"tenant_id": ..., "api_key": ...}.
    Create {
        /// The tenant's name.
        #[arg(long, env = "NURTURE_TENANT_NAME")]
        name: String,
    },
}

/// `system`, `manual` (starts now) or `manual:2026-01-05T09:00:00Z`.
#[derive(Debug, Clone, PartialEq)]
pub enum ClockArg {
    System,
    Manual(Timestamp),
}

fn parse_clock(s: &str) -> Result<ClockArg, String> {
    match s {
        "system" => Ok(ClockArg::System),
        "manual" => Ok(ClockArg::Manual(Timestamp::now())),
        other => match other.strip_prefix("manual:") {
            Some(at) => at
                .parse::<Timestamp>()
                .map(ClockArg::Manual)
                .map_err(|e| format!("{at:?} is not an RFC 3339 instant: {e}")),
            None => Err(format!(
                "{other:?}: expected system, manual or manual:RFC3339"
            )),
        },
    }
}

fn parse_listen(s: &str) -> Result<String, String> {
    s.parse::<std::net::SocketAddr>()
        .map(|_| s.to_string())
        .map_err(|e| format!("{s:?} is not an address like 127.0.0.1:8080: {e}"))
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "NURTURE_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: String,

    /// `system`, or `manual[:RFC3339]`: time stands still until POST /v1/clock/advance.
    #[arg(long, env = "NURTURE_CLOCK", default_value = "system", value_parser = parse_clock)]
    pub clock: ClockArg,

    /// Serve the API alone, without the scheduler (when workers run elsewhere).
    #[arg(long, env = "NURTURE_NO_WORKER")]
    pub no_worker: bool,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "NURTURE_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,

    /// The scheduler's settings (unless --no-worker).
    #[command(flatten)]
    pub worker: WorkerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Enrollments claimed and committed per transaction.
    #[arg(long, env = "NURTURE_BATCH_SIZE", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,

    /// Batches running at once against the database, across every process on it (PostgreSQL;
    /// SQLite runs one). About the database server's cores.
    #[arg(long, env = "NURTURE_MAX_CONCURRENT_BATCHES", default_value_t = DEFAULT_MAX_CONCURRENT_BATCHES, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_concurrent_batches: u32,
}

impl Default for WorkerArgs {
    fn default() -> Self {
        let d = nurture_core::engine::SchedulerConfig::default();
        WorkerArgs {
            batch_size: d.batch_size,
            max_concurrent_batches: d.max_concurrent_batches,
        }
    }
}

impl WorkerArgs {
    pub fn scheduler(&self) -> nurture_core::engine::SchedulerConfig {
        nurture_core::engine::SchedulerConfig {
            batch_size: self.batch_size,
            max_concurrent_batches: self.max_concurrent_batches,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How many leads the demo tenant gets.
    #[arg(long, env = "NURTURE_DEMO_LEADS", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub leads: u32,

    /// Days to simulate; the simulation ends at the current time, so `--serve` continues from it.
    #[arg(long, env = "NURTURE_DEMO_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=365))]
    pub days: u32,

    /// Seed of the random lead generator (same seed, same demo).
    #[arg(long, env = "NURTURE_DEMO_SEED", default_value_t = 7)]
    pub seed: u64,

    /// After the simulation, serve the API on the demo data (real clock).
    #[arg(long)]
    pub serve: bool,

    /// Address to listen on with --serve.
    #[arg(long, env = "NURTURE_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: String,
}

impl DemoArgs {
    pub fn serve_args(&self) -> ServeArgs {
        ServeArgs {
            listen: self.listen.clone(),
            clock: ClockArg::System,
            no_worker: false,
            body_limit: 1024 * 1024,
            worker: WorkerArgs::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Which backend to measure.
    #[arg(long, env = "NURTURE_BENCH_BACKEND", value_enum, default_value_t = Backend::Sqlite)]
    pub backend: Backend,

    /// How many leads the benchmark database holds.
    #[arg(long, env = "NURTURE_BENCH_LEADS", default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..=50_000_000))]
    pub leads: u32,

    /// Scheduler processes (PostgreSQL only).
    #[arg(long, env = "NURTURE_BENCH_WORKERS", default_value_t = 1)]
    pub workers: u32,

    /// Enrollments per scheduler transaction.
    #[arg(long, env = "NURTURE_BATCH_SIZE", default_value_t = 1000)]
    pub batch_size: u32,

    /// Batches running at once against the database, across the workers (PostgreSQL).
    #[arg(long, env = "NURTURE_MAX_CONCURRENT_BATCHES", default_value_t = DEFAULT_MAX_CONCURRENT_BATCHES, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_concurrent_batches: u32,

    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,

    /// After the engine's rounds, run the next email of every enrollment in raw SQL on the same
    /// database (SQLite: prepared statements, no engine; PostgreSQL: one statement per batch that
    /// does the whole step in the server), and print its rate beside the engine's: the ceiling
    /// of this schema on this machine.
    #[arg(long)]
    pub reference: bool,

    /// Where to build the benchmark database (default: a fresh temporary directory, removed after).
    #[arg(long, env = "NURTURE_BENCH_DIR")]
    pub dir: Option<std::path::PathBuf>,
}
