//! One policy for every call that leaves the process.
//!
//! A [`Policy`] per remote dependency (a module over HTTP, SMTP, webhooks,
//! the JWKS fetch) wraps each call in, from the outside in:
//!
//! 1. a **bulkhead**: at most `max_concurrent` calls at once; the next one
//!    fails at once ([`PolicyError::BulkheadFull`]) instead of queueing;
//! 2. an overall **deadline** (`deadline_ms`, shortened, never lengthened, by
//!    the caller's own deadline);
//! 3. a **circuit breaker** ([`breaker`]), consulted before every attempt:
//!    when open, no network call is made ([`PolicyError::BreakerOpen`]);
//! 4. a **timeout per attempt**;
//! 5. **retries** for idempotent calls on retryable failures, with
//!    exponential backoff and full jitter (at least the dependency's
//!    `Retry-After`), within the deadline and a **retry budget**: retries
//!    may add at most `retry_budget_percent` of the call volume (plus a
//!    small floor), so an outage does not multiply the load.
//!
//! Every outcome is counted per dependency (`remote_calls_total`,
//! `remote_retries_total`, `remote_breaker_state`, `remote_breaker_transitions_total`,
//! `remote_bulkhead_rejections_total`, `remote_call_duration_seconds`), and
//! every breaker transition is logged with the dependency's name.

pub mod breaker;
mod policy;
mod settings;

pub use breaker::{BreakerSettings, State};
pub use policy::{Policy, PolicyError, Verdict};
pub use settings::{BreakerOverrides, Overrides, PolicySettings, ResilienceSettings};
