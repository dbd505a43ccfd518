//! The one state every handler shares (STYLE.md: one shared state struct).

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use metrics_exporter_prometheus::PrometheusHandle;
use nurture_core::Engine;
use tokio::sync::Mutex;

/// How many locks guard concurrent requests with an `Idempotency-Key`: requests whose
/// (tenant, key) hash to the same lock run one after the other, so a retry that races the
/// original waits for it and then replays its answer instead of running twice.
const IDEMPOTENCY_LOCKS: usize = 64;

#[derive(Clone)]
pub(crate) struct AppState {
    pub engine: Arc<Engine>,
    /// The largest request body accepted, in bytes (413 above).
    pub body_limit: usize,
    pub idempotency_locks: Arc<Vec<Mutex<()>>>,
    pub metrics: PrometheusHandle,
    /// The OpenAPI document, rendered once when the router is built.
    pub openapi: Arc<OnceLock<Bytes>>,
}

impl AppState {
    pub(crate) fn new(engine: Arc<Engine>, body_limit: usize, metrics: PrometheusHandle) -> Self {
        AppState {
            engine,
            body_limit,
            idempotency_locks: Arc::new((0..IDEMPOTENCY_LOCKS).map(|_| Mutex::new(())).collect()),
            metrics,
            openapi: Arc::new(OnceLock::new()),
        }
    }

    /// The lock for one (tenant, key) pair.
    pub(crate) fn idempotency_lock(&self, hash: &[u8]) -> &Mutex<()> {
        let n = hash
            .iter()
            .take(8)
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        &self.idempotency_locks[n % self.idempotency_locks.len()]
    }
}
