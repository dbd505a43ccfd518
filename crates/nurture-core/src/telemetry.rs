//! Scheduler figures for `/metrics` (issue #3), through the `metrics` facade: whatever recorder
//! the binary installs (Prometheus in `serve`) receives them; without one they cost nothing.

use crate::engine::BatchReport;

pub fn record_batch(report: &BatchReport) {
    for (key, count) in &report.outcomes {
        let (channel, outcome) = key.split_once(':').unwrap_or((key.as_str(), ""));
        metrics::counter!("nurture_step_executions_total", "channel" => channel.to_string(), "outcome" => outcome.to_string())
            .increment(*count);
    }
    let lag = metrics::histogram!("nurture_step_lag_seconds");
    for l in &report.lags {
        lag.record(*l);
    }
}

pub fn record_backlog(due: i64) {
    metrics::gauge!("nurture_due_backlog").set(due as f64);
}
