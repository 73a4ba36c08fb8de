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

/// Writes `Observed`, a wrapper of `Arc<dyn $api>` whose every method is a
/// [`module_call`] under `$module`: one line per method of the trait, each
/// method's context first.
///
/// ```ignore
/// kernel::observed!("inventory", InventoryApi, InventoryError, {
///     fn stock(sku: &Sku) -> StockLevel;
///     fn reserve(request: ReserveStock) -> Reservation;
/// });
/// ```
#[macro_export]
macro_rules! observed {
    ($module:literal, $api:ident, $error:ty, {
        $( fn $method:ident($($arg:ident: $ty:ty),* $(,)?) -> $ok:ty; )*
    }) => {
        #[doc = concat!("Wraps an implementation of [`", stringify!($api), "`] so that every call is observed under the module name `", $module, "`.")]
        pub struct Observed(pub ::std::sync::Arc<dyn $api>);

        #[::async_trait::async_trait]
        impl $api for Observed {
            $(
                async fn $method(
                    &self,
                    cx: &$crate::CallContext,
                    $($arg: $ty),*
                ) -> ::std::result::Result<$ok, $error> {
                    $crate::observe::module_call($module, stringify!($method), self.0.$method(cx, $($arg),*))
                        .await
                }
            )*
        }
    };
}
