//! Logs, traces and metrics set-up for the `shop` binary and its tests.
//!
//! Logs are JSON lines (one object per event, with the fields of the
//! enclosing spans, so `request_id` is on every line of a request, and
//! `trace_id` / `span_id` when traces are on) unless a terminal asks for the
//! human format. `RUST_LOG` filters, as usual. Traces go to an OTLP
//! collector when the standard `OTEL_*` variables name one ([`trace`]).
//! Metrics go to a process-wide Prometheus recorder rendered at `/metrics`.

use std::io::IsTerminal as _;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

mod json;
mod prometheus;
mod stdout;
pub mod trace;

pub use prometheus::{collect_process_metrics, metrics_handle, metrics_upkeep};

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

/// Installs the global tracing subscriber, with the OpenTelemetry layer
/// when the environment asks for traces ([`trace`]). `filter` is used when
/// `RUST_LOG` is not set. Calling it again is harmless (the first call
/// wins). Call [`trace::shutdown`] before the process exits.
pub fn init_logging(format: LogFormat, filter: &str) {
    let env_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let lines = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_span_events(FmtSpan::NONE)
            .fmt_fields(json::SpanFields)
            .event_format(json::JsonLine)
            .with_writer(stdout::line_writer)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .pretty()
            .with_writer(stdout::line_writer)
            .boxed()
    };
    // Spans go to the collector from `info` up whatever the log filter
    // says: quieter logs must not cut traces short.
    let otel = trace::provider_from_env().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(trace::tracer(&provider))
            .with_filter(LevelFilter::INFO)
    });
    let result = tracing_subscriber::registry()
        .with(otel)
        .with(lines.with_filter(env_filter))
        .try_init();
    // Already installed (tests spawn several apps): keep the first one.
    drop(result);
}
