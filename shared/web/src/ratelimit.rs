//! Rate limits answered with a 429 problem and `Retry-After`.
//!
//! [`PeerIp`] keys actix-governor's per-client limit on the whole API;
//! [`KeyedLimit`] is for stricter limits inside handlers (sign-in per IP and
//! per account, registration per IP). State is per process: with several
//! instances each enforces its own budget (docs/adr/0007-rate-limits.md).

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_governor::governor::clock::{Clock as _, DefaultClock, QuantaInstant};
use actix_governor::governor::middleware::NoOpMiddleware;
use actix_governor::governor::{NotUntil, Quota, RateLimiter};
use actix_governor::{KeyExtractor, SimpleKeyExtractionError};
use actix_web::dev::ServiceRequest;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError as _};

use crate::Problem;

/// The 429 problem for a caller who must wait `wait`.
pub fn too_many_requests(wait: Duration) -> Problem {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests; retry in {seconds} s"),
    )
    .with_retry_after(seconds.max(1))
}

/// Keys the API-wide limit by the client's IP address (the TCP peer; put
/// the shop behind a proxy that sets it, or key by a trusted header there).
#[derive(Debug, Clone, Copy)]
pub struct PeerIp;

impl KeyExtractor for PeerIp {
    type Key = IpAddr;
    type KeyExtractionError = SimpleKeyExtractionError<&'static str>;

    fn extract(&self, req: &ServiceRequest) -> Result<IpAddr, Self::KeyExtractionError> {
        req.peer_addr()
            .map(|a| a.ip())
            .ok_or_else(|| SimpleKeyExtractionError::new("cannot tell the client's address"))
    }

    fn exceed_rate_limit_response(
        &self,
        negative: &NotUntil<QuantaInstant>,
        _response: HttpResponseBuilder,
    ) -> HttpResponse {
        too_many_requests(negative.wait_time_from(DefaultClock::default().now())).error_response()
    }
}

/// A limit of `per_minute` events per key, with bursts up to the same number.
pub struct KeyedLimit<K: Hash + Eq + Clone> {
    limiter: Option<
        RateLimiter<
            K,
            actix_governor::governor::state::keyed::DefaultKeyedStateStore<K>,
            DefaultClock,
            NoOpMiddleware<QuantaInstant>,
        >,
    >,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> std::fmt::Debug for KeyedLimit<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLimit")
            .field("enabled", &self.limiter.is_some())
            .finish()
    }
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    /// `per_minute` events per key; `None` (or 0) disables the limit.
    pub fn per_minute(per_minute: Option<u32>) -> KeyedLimit<K> {
        KeyedLimit {
            limiter: per_minute
                .and_then(NonZeroU32::new)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one event for `key`.
    ///
    /// # Errors
    /// A 429 problem when `key` is over its limit.
    pub fn check(&self, key: &K) -> Result<(), Problem> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        // Forget idle keys now and then, so the map does not grow forever.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            limiter.retain_recent();
        }
        limiter.check_key(key).map_err(|not_until| {
            too_many_requests(not_until.wait_time_from(DefaultClock::default().now()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_answers_429_with_retry_after() {
        let limit = KeyedLimit::per_minute(Some(2));
        assert!(limit.check(&"a").is_ok());
        assert!(limit.check(&"a").is_ok());
        let problem = limit.check(&"a").unwrap_err();
        assert_eq!(problem.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(limit.check(&"b").is_ok(), "keys are limited separately");
        let disabled = KeyedLimit::per_minute(None);
        for _ in 0..100 {
            assert!(disabled.check(&"a").is_ok());
        }
    }
}
