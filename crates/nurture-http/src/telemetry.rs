//! The process-wide Prometheus recorder behind `/metrics` (issue #3). Installed once, on the
//! first router built, so several routers in one process (the tests) share it and the engine's
//! own figures recorded through the `metrics` facade land in the same registry.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, in seconds, for request durations and step lag.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 3600.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

pub(crate) fn prometheus() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = || {
                PrometheusBuilder::new()
                    .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                    .expect("the bucket list is not empty")
            };
            builder().install_recorder().unwrap_or_else(|e| {
                // Another recorder was installed first (by the embedding program): serve an
                // empty registry rather than fail to start.
                tracing::warn!(error = %e, "a metrics recorder is already installed; /metrics shows only its own");
                builder().build_recorder().handle()
            })
        })
        .clone()
}
