//! The process-wide Prometheus recorder and its upkeep.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;

/// Buckets (seconds) for every `*_seconds` histogram (latencies, pool waits).
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), DURATION_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; ours is the only one.
            drop(metrics::set_global_recorder(recorder));
            handle
        })
        .clone()
}

/// Reads the process's resident memory, CPU time, open file descriptors and
/// threads into the recorder (`process_*`, the names Prometheus's own
/// clients use); call it before rendering `/metrics`.
pub fn collect_process_metrics() {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR
        .get_or_init(|| {
            let collector = metrics_process::Collector::default();
            collector.describe();
            collector
        })
        .collect();
}

/// Drains `handle`'s histogram samples every `every` until `stopped` turns
/// true.
///
/// A recorder made with `build_recorder` (ours, so that `/metrics` is served
/// by the shop's own server) runs no upkeep of its own: every sample recorded
/// waits in memory until the next render. With no scraper, or a slow one,
/// that was some 200 bytes per checkout, for ever (the soak of issue 11 grew
/// 1.5 MiB a minute). Upkeep folds the samples into the buckets.
pub async fn metrics_upkeep(
    handle: PrometheusHandle,
    every: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => handle.run_upkeep(),
            _ = stopped.wait_for(|stop| *stop) => break,
        }
    }
    handle.run_upkeep();
}
