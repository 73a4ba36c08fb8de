//! Distributed traces: OpenTelemetry export over OTLP/HTTP and W3C trace
//! context propagation.
//!
//! Off unless `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set to a non-empty value (and
//! `OTEL_SDK_DISABLED` is not `true`). Off means no OpenTelemetry layer in
//! the subscriber at all: spans cost what they cost without it, and the
//! propagation helpers return at once. The other standard variables
//! (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_*`) are read by the SDK itself.
//!
//! Context crosses processes as `traceparent` / `tracestate`: on HTTP
//! requests (in and out), in the event envelope and in the AMQP message
//! headers. [`continue_trace`] makes a span the child of such a context;
//! [`current`] gives the context of the current span to send on.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C header carrying the trace id and the parent span id.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header carrying vendor-specific trace state.
pub const TRACESTATE: &str = "tracestate";

static ENABLED: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether traces are exported by this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A trace context as it travels between processes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceHeaders {
    /// `traceparent`: version, trace id, parent span id, flags.
    pub traceparent: String,
    /// `tracestate`, when there is any.
    pub tracestate: Option<String>,
}

/// The endpoint spans are posted to, from the standard variables: the
/// traces endpoint as given, or the base endpoint with `/v1/traces`.
fn endpoint_from(get: impl Fn(&str) -> Option<String>) -> Option<String> {
    let set = |name: &str| get(name).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return None;
    }
    if let Some(traces) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Some(traces.trim().to_owned());
    }
    set("OTEL_EXPORTER_OTLP_ENDPOINT")
        .map(|base| format!("{}/v1/traces", base.trim().trim_end_matches('/')))
}

/// Builds the tracer provider when the environment asks for traces.
/// `None`: traces are off.
pub(crate) fn provider_from_env() -> Option<SdkTracerProvider> {
    let endpoint = endpoint_from(|name| std::env::var(name).ok())?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint.clone())
        .build();
    let exporter = match exporter {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("warning: traces are off: cannot export to {endpoint}: {e}");
            return None;
        }
    };
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let resource = if named {
        Resource::builder().build()
    } else {
        Resource::builder().with_service_name("shop").build()
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    ENABLED.store(true, Ordering::Relaxed);
    Some(PROVIDER.get_or_init(|| provider).clone())
}

/// The tracer spans are recorded with.
pub(crate) fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::SdkTracer {
    provider.tracer("shop")
}

/// Exports what is buffered and stops the exporter. Call it once, when the
/// process is about to exit, outside the async runtime (it blocks).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(e) = provider.shutdown()
    {
        eprintln!("warning: traces not all exported at exit: {e}");
    }
}

/// Makes `span` a child of the remote context in `traceparent` (and
/// `tracestate`), as received on a request, an event or a message. Does
/// nothing when traces are off or the header is absent or malformed.
pub fn continue_trace(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    if let Some(cx) = remote(traceparent, tracestate) {
        // Fails only once the span has started recording; ours are fresh.
        drop(span.set_parent(cx));
    }
}

/// Links `span` to the remote context in `traceparent` (and `tracestate`):
/// for a span that works for several messages at once, each of which
/// continues a trace of its own (OpenTelemetry's batch receive). Does
/// nothing when traces are off or the header is absent or malformed.
pub fn link(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    if let Some(cx) = remote(traceparent, tracestate) {
        span.add_link(cx.span().span_context().clone());
    }
}

/// The valid remote context in `traceparent` (and `tracestate`), when
/// traces are on.
fn remote(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<opentelemetry::Context> {
    if !enabled() {
        return None;
    }
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert(TRACEPARENT.to_owned(), traceparent?.to_owned());
    if let Some(state) = tracestate {
        carrier.insert(TRACESTATE.to_owned(), state.to_owned());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The context of the current span, to send with an outgoing request,
/// event or message; `None` when traces are off or there is no span.
pub fn current() -> Option<TraceHeaders> {
    if !enabled() {
        return None;
    }
    let cx = Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::with_capacity(2);
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    Some(TraceHeaders {
        traceparent: carrier.remove(TRACEPARENT)?,
        tracestate: carrier.remove(TRACESTATE).filter(|s| !s.is_empty()),
    })
}

/// The trace and span ids of the current span, for log lines.
pub(crate) fn current_ids() -> Option<(String, String)> {
    if !enabled() {
        return None;
    }
    let cx = Span::current().context();
    let span = cx.span();
    let ids = span.span_context();
    ids.is_valid()
        .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
}

/// Adds the current trace context to an outgoing request's headers.
pub fn inject(headers: &mut http::HeaderMap) {
    let Some(trace) = current() else {
        return;
    };
    if let Ok(value) = http::HeaderValue::from_str(&trace.traceparent) {
        headers.insert(TRACEPARENT, value);
    }
    if let Some(state) = trace.tracestate
        && let Ok(value) = http::HeaderValue::from_str(&state)
    {
        headers.insert(TRACESTATE, value);
    }
}

/// The current trace context as request headers (empty when off).
pub fn headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    inject(&mut headers);
    headers
}

/// A client span for one outgoing HTTP request named `name` (`otel.name`),
/// and the request carrying that span's trace context, so the server's
/// spans become its children. Await the send inside the span:
/// `request.send().instrument(span)`.
pub fn outgoing(request: reqwest::RequestBuilder, name: &str) -> (reqwest::RequestBuilder, Span) {
    let span = tracing::info_span!("http_client", otel.name = %name, otel.kind = "client");
    let request = request.headers(span.in_scope(headers));
    (request, span)
}

#[cfg(test)]
mod tests {
    use super::endpoint_from;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn traces_are_off_unless_an_endpoint_is_set_to_something() {
        assert_eq!(endpoint_from(env(&[])), None);
        assert_eq!(
            endpoint_from(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")])),
            None
        );
        assert_eq!(
            endpoint_from(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")])),
            None
        );
        assert_eq!(
            endpoint_from(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4318"),
                ("OTEL_SDK_DISABLED", "true"),
            ])),
            None
        );
    }

    #[test]
    fn the_traces_endpoint_wins_and_the_base_endpoint_gets_the_signal_path() {
        assert_eq!(
            endpoint_from(env(&[(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://jaeger:4318/"
            )]))
            .as_deref(),
            Some("http://jaeger:4318/v1/traces")
        );
        assert_eq!(
            endpoint_from(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://collector:4318/traces"
                ),
            ]))
            .as_deref(),
            Some("http://collector:4318/traces")
        );
    }
}
