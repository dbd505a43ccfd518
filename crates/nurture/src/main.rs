//! `nurture`: one binary for every role. `main` parses the command line, opens the store the
//! database URL names, builds the engine, and runs what was asked until it ends or a signal
//! stops it (SPEC section 5, "CLI").

mod bench;
mod cli;
mod demo;

use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;
use nurture_core::Engine;
use nurture_core::clock::{Clock, ManualClock, SystemClock};
use nurture_core::store::Store;

use cli::{Cli, ClockArg, Command, LogFormat, TenantCommand};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format, cli.command.is_quiet());
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by ": ", as `{:#}` does, leaving out a cause whose text the
/// message before it already ends with (an error that displays its source, e.g. the store's).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn init_logs(format: LogFormat, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Opens the store a database URL names: `sqlite://PATH` (the embedded default) or
/// `postgres://...`.
pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        let store = nurture_sqlite::SqliteStore::connect(url)
            .await
            .with_context(|| format!("cannot open the database {url}"))?;
        Ok(Arc::new(store))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // The store's error names the server with the password redacted; never echo the URL.
        let store = nurture_postgres::PgStore::connect(url)
            .await
            .context("cannot open the PostgreSQL database")?;
        Ok(Arc::new(store))
    } else {
        bail!("--database {url:?}: expected a sqlite://PATH or postgres://... URL")
    }
}

/// Opens the store and applies pending migrations: every command that uses the database
/// migrates on start (SPEC section 7).
async fn ready_store(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    let store = open_store(url).await?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

fn key_pepper() -> Vec<u8> {
    std::env::var("NURTURE_API_KEY_PEPPER")
        .map(String::into_bytes)
        .unwrap_or_else(|_| nurture_core::keys::DEFAULT_PEPPER.to_vec())
}

fn engine_with(store: Arc<dyn Store>, clock: &ClockArg) -> Engine {
    let engine = match clock {
        ClockArg::System => Engine::new(store, Arc::new(SystemClock) as Arc<dyn Clock>),
        ClockArg::Manual(start) => {
            Engine::with_manual_clock(store, Arc::new(ManualClock::new(*start)))
        }
    };
    engine.with_key_pepper(&key_pepper())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received");
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let url = cli.database.clone();
    match cli.command {
        Command::Migrate => {
            ready_store(&url).await?;
            eprintln!("migrations applied to {url}");
            Ok(())
        }
        Command::Serve(args) => {
            let store = ready_store(&url).await?;
            let engine =
                Arc::new(engine_with(store, &args.clock).with_config(args.worker.scheduler()));
            serve(engine, args).await
        }
        Command::Worker(args) => {
            let store = ready_store(&url).await?;
            let engine = engine_with(store, &ClockArg::System).with_config(args.scheduler());
            tracing::info!(database = %url, "worker started");
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = stop_tx.send(true);
            });
            engine.run_scheduler(stop_rx).await?;
            tracing::info!("worker stopped");
            Ok(())
        }
        Command::Tenant(TenantCommand::Create { name }) => {
            let store = ready_store(&url).await?;
            let engine = engine_with(store, &ClockArg::System);
            let (tenant, key) = engine.create_tenant(&name).await?;
            println!(
                "{}",
                serde_json::json!({ "tenant_id": tenant.id, "api_key": key })
            );
            Ok(())
        }
        Command::Demo(args) => {
            let store = ready_store(&url).await?;
            let summary = demo::run(store.clone(), &args).await?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            if args.serve {
                let engine = Arc::new(engine_with(store, &ClockArg::System));
                serve(engine, args.serve_args()).await?;
            }
            Ok(())
        }
        Command::Bench(args) => bench::run(&args).await,
    }
}

/// `nurture serve`: the API and, unless `--no-worker` or a manual clock, the scheduler, side by
/// side until a signal; then in-flight requests and the current batch finish.
async fn serve(engine: Arc<Engine>, args: cli::ServeArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, manual_clock = engine.is_manual_clock(), "serving");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run_worker = !args.no_worker && !engine.is_manual_clock();
    let scheduler = run_worker.then(|| {
        let engine = engine.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move { engine.run_scheduler(stop).await })
    });
    let config = nurture_http::HttpConfig {
        body_limit: args.body_limit,
        ..Default::default()
    };
    let mut stop = stop_rx.clone();
    let http = nurture_http::serve(listener, engine.clone(), config, async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    let signal = tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    http.await?;
    signal.abort();
    if let Some(s) = scheduler {
        s.await.context("scheduler task")??;
    }
    tracing::info!("stopped");
    Ok(())
}
