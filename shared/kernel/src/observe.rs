//! What every call through a module's `-api` trait records, whichever
//! implementation serves it (in process or over HTTP): one span named
//! `<module>.<method>`, `module_calls_total{module,method,outcome}` and
//! `module_call_duration_seconds{module,method}`. The `-api` crates wrap
//! their trait with it (`Observed`); the composition root wraps every
//! implementation it hands to another module.

use std::future::Future;
use std::time::Instant;

use tracing::Instrument as _;

/// Runs `call`, a call of `method` on `module`'s trait, observed.
///
/// # Errors
/// Those of `call`, unchanged.
pub async fn module_call<T, E>(
    module: &'static str,
    method: &'static str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let span = tracing::info_span!(
        "module_call",
        otel.name = %format_args!("{module}.{method}"),
        module,
        method,
    );
    let started = Instant::now();
    let result = call.instrument(span).await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!("module_calls_total", "module" => module, "method" => method, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("module_call_duration_seconds", "module" => module, "method" => method)
        .record(started.elapsed().as_secs_f64());
    result
}
