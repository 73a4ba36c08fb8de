//! Per-request observability: request id, root span, access log, metrics.
//!
//! [`RequestIdRootSpan`] (for `tracing_actix_web::TracingLogger`) takes the
//! request id from `x-request-id` or makes one, stores it in the request's
//! extensions and puts it on the root span, so every log line of the request
//! carries `request_id`. [`middleware`] then, inside that span, sets the
//! response header, writes one access-log line, records
//! `http_requests_total` and `http_request_duration_seconds` by route
//! template, and passes error responses through the problem safety net.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage as _};
use kernel::RequestId;
use tracing::Span;
use tracing_actix_web::RootSpanBuilder;

/// Header carrying the request id, in and out.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The headers read or written on every request, as names made at compile
/// time: a `&str` name is parsed and checked again at each lookup.
const REQUEST_ID_NAME: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);
const TRACEPARENT: HeaderName = HeaderName::from_static(telemetry::trace::TRACEPARENT);
const TRACESTATE: HeaderName = HeaderName::from_static(telemetry::trace::TRACESTATE);

tokio::task_local! {
    static REQUEST_ID: RequestId;
}

/// The request id of the request being handled on this task, if any.
pub fn current_request_id() -> Option<RequestId> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// The request's route template (`unmatched` if none), as the root span
/// found it; kept in the request's extensions for the metrics.
#[derive(Debug, Clone)]
struct Route(String);

/// Root span builder that honours an incoming `x-request-id`.
#[derive(Debug, Clone, Copy)]
pub struct RequestIdRootSpan;

impl RootSpanBuilder for RequestIdRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request
            .headers()
            .get(REQUEST_ID_NAME)
            .and_then(|v| v.to_str().ok())
            .and_then(RequestId::parse)
            .unwrap_or_else(RequestId::generate);
        let route = request
            .match_pattern()
            .unwrap_or_else(|| "unmatched".into());
        let span = tracing::info_span!(
            "http_request",
            request_id = %request_id,
            http.method = %request.method(),
            http.route = %route,
            http.target = %request.uri().path(),
            http.status_code = tracing::field::Empty,
            // The caller, once a token is verified (`auth::extract`).
            user.id = tracing::field::Empty,
            otel.name = %format_args!("{} {}", request.method(), route),
            otel.kind = "server",
        );
        let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
        telemetry::trace::continue_trace(&span, header(TRACEPARENT), header(TRACESTATE));
        let mut extensions = request.extensions_mut();
        extensions.insert(request_id);
        extensions.insert(Route(route));
        drop(extensions);
        span
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let status = match outcome {
            Ok(response) => response.status().as_u16(),
            Err(error) => error.as_response_error().status_code().as_u16(),
        };
        span.record("http.status_code", status);
    }
}

/// The method as a metric label: the standard methods by name, any other
/// (a client may send any token) as `other`, so that hostile requests cannot
/// add series to the recorder without bound.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("other")
}

/// The request metrics of one series (method, route template, status).
struct SeriesHandles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// The series seen so far, by method and status, then route template.
type Series = HashMap<(&'static str, u16), HashMap<String, SeriesHandles>>;

/// Every series seen so far. Their number is bounded as their labels are
/// (the standard methods, the route templates and `unmatched`, the status
/// codes). The recorder is installed first, so no handle of the no-op
/// recorder is ever kept.
fn series() -> &'static RwLock<Series> {
    static SERIES: OnceLock<RwLock<Series>> = OnceLock::new();
    SERIES.get_or_init(|| {
        drop(telemetry::metrics_handle());
        RwLock::new(HashMap::new())
    })
}

/// Counts a request of `method`, `route` and `status` that took `seconds`:
/// `http_requests_total` and `http_request_duration_seconds`. A series'
/// handles are made by the recorder once and kept, so a request records
/// without building label strings or looking the series up in the
/// recorder (some of the allocation a small request costs).
fn record_request(method: &'static str, route: &str, status: u16, seconds: f64) {
    if let Ok(known) = series().read()
        && let Some(handles) = known.get(&(method, status)).and_then(|r| r.get(route))
    {
        handles.requests.increment(1);
        handles.duration.record(seconds);
        return;
    }
    let labels = [
        ("method", method.to_owned()),
        ("route", route.to_owned()),
        ("status", status.to_string()),
    ];
    let handles = SeriesHandles {
        requests: metrics::counter!("http_requests_total", &labels),
        duration: metrics::histogram!("http_request_duration_seconds", &labels),
    };
    handles.requests.increment(1);
    handles.duration.record(seconds);
    if let Ok(mut known) = series().write() {
        known
            .entry((method, status))
            .or_default()
            .insert(route.to_owned(), handles);
    }
}

/// The per-request middleware; wrap it inside `TracingLogger<RequestIdRootSpan>`.
///
/// # Errors
/// Only those of the inner service.
pub async fn middleware<B: MessageBody + 'static>(
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let started = Instant::now();
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .cloned()
        .unwrap_or_else(RequestId::generate);
    let method = request.method().clone();
    // Handler errors arrive here as error responses; an `Err` would come only
    // from a failing middleware further in and is left to actix.
    let response = REQUEST_ID
        .scope(request_id.clone(), next.call(request))
        .await?
        .map_into_boxed_body();
    let mut response = REQUEST_ID.sync_scope(request_id.clone(), || {
        crate::problem::ensure_problem(response)
    });
    if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
        response.headers_mut().insert(REQUEST_ID_NAME, value);
    }
    // The root span found the route template already: the walk over every
    // route (a regular expression each) is not made twice.
    let route = match response.request().extensions().get::<Route>() {
        Some(Route(route)) => route.clone(),
        None => response
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned()),
    };
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    record_request(
        method_label(method.as_str()),
        &route,
        status,
        elapsed.as_secs_f64(),
    );
    tracing::info!(
        http.method = %method,
        http.route = %route,
        http.status_code = status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        "request finished"
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::record_request;

    /// The value `text` (a Prometheus rendering) gives the line starting
    /// with `series`.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|rest| rest.trim().parse().ok())
    }

    #[test]
    fn each_request_counts_in_its_own_series_the_first_and_the_cached_alike() {
        let route = "/observe-test/{id}";
        record_request("GET", route, 200, 0.003);
        record_request("GET", route, 200, 0.004);
        record_request("GET", route, 404, 0.001);
        record_request("POST", route, 200, 0.002);
        let text = telemetry::metrics_handle().render();
        let count = |method: &str, status: u16| {
            value(
                &text,
                &format!(
                    "http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
                ),
            )
        };
        assert_eq!(count("GET", 200), Some(2.0), "{text}");
        assert_eq!(count("GET", 404), Some(1.0), "{text}");
        assert_eq!(count("POST", 200), Some(1.0), "{text}");
        assert_eq!(
            value(
                &text,
                &format!(
                    "http_request_duration_seconds_count{{method=\"GET\",route=\"{route}\",status=\"200\"}}"
                ),
            ),
            Some(2.0),
            "{text}"
        );
    }
}
