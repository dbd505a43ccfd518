//! Serves the API on a fresh SQLite database with a manual clock, for poking at it by hand or
//! with an API fuzzer (schemathesis). Prints `{"base_url", "api_key"}` on one line, then serves
//! until Ctrl-C.
//!
//!     cargo run -p nurture-http --example serve_manual -- [ADDR] [DB_DIR]

use std::sync::Arc;

use nurture_core::Engine;
use nurture_core::clock::ManualClock;
use nurture_core::store::Store;
use nurture_http::{HttpConfig, serve};
use nurture_sqlite::SqliteStore;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let dir = match args.next() {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir().join(format!("nurture-example-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    let store = SqliteStore::connect(&format!("sqlite://{}/example.db", dir.display())).await?;
    store.migrate().await?;
    let start = "2026-01-05T09:00:00Z".parse()?;
    let engine = Arc::new(Engine::with_manual_clock(
        Arc::new(store),
        Arc::new(ManualClock::new(start)),
    ));
    let (_, api_key) = engine.create_tenant("example").await?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    println!(
        "{}",
        serde_json::json!({ "base_url": base_url, "api_key": api_key })
    );
    serve(listener, engine, HttpConfig::default(), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
