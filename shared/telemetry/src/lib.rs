//! Logs and metrics set-up for the `shop` binary and its tests.
//!
//! Logs are JSON lines (one object per event, with the fields of the
//! enclosing spans, so `request_id` is on every line of a request) unless a
//! terminal asks for the human format. `RUST_LOG` filters, as usual.
//! Metrics go to a process-wide Prometheus recorder rendered at `/metrics`.

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON lines, for machines (the default when stdout is not a terminal).
    Json,
    /// Coloured, multi-line, for people.
    Pretty,
    /// `pretty` on a terminal, `json` otherwise.
    Auto,
}

/// Installs the global tracing subscriber. `filter` is used when `RUST_LOG`
/// is not set. Calling it again is harmless (the first call wins).
pub fn init_logging(format: LogFormat, filter: &str) {
    let env_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_span_events(FmtSpan::NONE);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init()
    } else {
        builder.pretty().try_init()
    };
    // Already installed (tests spawn several apps): keep the first one.
    drop(result);
}

/// Latency buckets (seconds) for every `*_duration_seconds` histogram.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".to_owned()),
                    DURATION_BUCKETS,
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; ours is the only one.
            drop(metrics::set_global_recorder(recorder));
            handle
        })
        .clone()
}
