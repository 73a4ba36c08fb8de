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
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::{FmtSpan, Format, FormatEvent, FormatFields, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, format};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

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
        let line = format::format()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true);
        tracing_subscriber::fmt::layer()
            .json()
            .with_span_events(FmtSpan::NONE)
            .event_format(WithTraceIds(line))
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

/// The JSON line format with the current span's `trace_id` and `span_id`
/// appended when traces are on (the line is unchanged when they are off).
struct WithTraceIds(Format<Json>);

impl<S, N> FormatEvent<S, N> for WithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some((trace_id, span_id)) = trace::current_ids() else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(512);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.trim_end();
        match body.strip_suffix('}') {
            Some(open) => writeln!(
                writer,
                "{open},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
            ),
            None => writer.write_str(&line),
        }
    }
}
