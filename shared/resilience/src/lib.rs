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

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng as _;
use tokio::sync::Semaphore;

pub use breaker::{BreakerSettings, State};

use breaker::{Admission, Breaker, Record};

/// `[resilience.<dependency>]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// Timeout of one attempt, ms.
    pub attempt_timeout_ms: u64,
    /// Time for the whole call, retries included, ms.
    pub deadline_ms: u64,
    /// Retries after the first attempt (idempotent calls only).
    pub max_retries: u32,
    /// First backoff ceiling, ms (doubles per retry; full jitter).
    pub retry_base_ms: u64,
    /// Largest backoff ceiling, ms.
    pub retry_max_ms: u64,
    /// Retries may add at most this percentage of the calls made.
    pub retry_budget_percent: f64,
    /// ... plus this many retries per second, whatever the volume.
    pub retry_budget_min_per_sec: f64,
    /// Calls in flight at once; more fail fast.
    pub max_concurrent: usize,
    /// The circuit breaker.
    pub breaker: BreakerSettings,
}

/// How one attempt went, as the policy needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The dependency answered properly (even if the answer is a refusal,
    /// such as a 404 or 422: that is no failure of the dependency).
    Healthy,
    /// The dependency failed (unreachable, timed out, 5xx, garbled).
    Failed {
        /// Trying again may help (connect errors, timeouts, 502/503/504, 429).
        retryable: bool,
        /// What the dependency asked for (`Retry-After`).
        retry_after: Option<Duration>,
    },
}

/// Why the policy gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError<E> {
    /// The last attempt's own failure.
    #[error("{0}")]
    Failed(E),
    /// The last attempt timed out.
    #[error("the call timed out")]
    Timeout,
    /// No time was left for (another) attempt.
    #[error("the deadline was exceeded")]
    DeadlineExceeded,
    /// The breaker is open: no call was made.
    #[error("the circuit breaker is open")]
    BreakerOpen {
        /// When trial calls will be let through.
        retry_after: Duration,
    },
    /// Too many calls in flight: no call was made.
    #[error("too many calls in flight")]
    BulkheadFull,
}

/// The policy of one dependency.
pub struct Policy {
    name: &'static str,
    settings: PolicySettings,
    breaker: Mutex<Breaker>,
    permits: Semaphore,
    budget: Mutex<Budget>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Token bucket of retries: calls deposit, retries withdraw one token.
#[derive(Debug)]
struct Budget {
    tokens: f64,
    refilled: Instant,
}

/// Tokens the budget holds at most.
const BUDGET_CAP: f64 = 100.0;

impl Policy {
    /// A policy named after its dependency (metric label, logs).
    pub fn new(name: &'static str, settings: PolicySettings) -> Policy {
        metrics::gauge!("remote_breaker_state", "dependency" => name).set(State::Closed.gauge());
        Policy {
            name,
            breaker: Mutex::new(Breaker::new(settings.breaker.clone())),
            permits: Semaphore::new(settings.max_concurrent.max(1)),
            // A reserve of ten seconds' worth of the floor, as Finagle's
            // retry budget starts with.
            budget: Mutex::new(Budget {
                tokens: (settings.retry_budget_min_per_sec * 10.0).clamp(1.0, BUDGET_CAP),
                refilled: Instant::now(),
            }),
            settings,
        }
    }

    /// The dependency's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The breaker's state now (readiness).
    pub fn state(&self) -> State {
        self.breaker
            .lock()
            .map(|b| b.state())
            .unwrap_or(State::Open)
    }

    /// Runs `attempt` under the policy. `caller_deadline` is the time the
    /// caller has left; `idempotent` says whether a retry is safe.
    ///
    /// # Errors
    /// [`PolicyError`]: the last failure, or why no (further) call was made.
    pub async fn call<T, E, F, Fut>(
        &self,
        caller_deadline: Option<Duration>,
        idempotent: bool,
        mut attempt: F,
    ) -> Result<T, PolicyError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = (Result<T, E>, Verdict)>,
    {
        let Ok(_permit) = self.permits.try_acquire() else {
            metrics::counter!("remote_bulkhead_rejections_total", "dependency" => self.name)
                .increment(1);
            self.count("bulkhead_full");
            return Err(PolicyError::BulkheadFull);
        };
        let own = Duration::from_millis(self.settings.deadline_ms);
        let deadline = Instant::now() + caller_deadline.map_or(own, |d| d.min(own));
        self.deposit();
        let mut retries = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.count("deadline_exceeded");
                return Err(PolicyError::DeadlineExceeded);
            }
            let generation = match self.admit() {
                (Admission::Rejected { retry_after }, _) => {
                    self.count("breaker_open");
                    return Err(PolicyError::BreakerOpen { retry_after });
                }
                (Admission::Permitted, generation) => generation,
            };
            let started = Instant::now();
            let timeout = Duration::from_millis(self.settings.attempt_timeout_ms).min(left);
            // If the caller drops this future mid-attempt, the breaker gets
            // its (half-open trial) slot back instead of waiting forever.
            let mut pending = Pending {
                policy: self,
                generation,
                armed: true,
            };
            let outcome = tokio::time::timeout(timeout, attempt()).await;
            pending.armed = false;
            let took = started.elapsed();
            metrics::histogram!("remote_call_duration_seconds", "dependency" => self.name)
                .record(took.as_secs_f64());
            let (result, retryable, retry_after) = match outcome {
                Ok((result, Verdict::Healthy)) => {
                    let slow = took > Duration::from_millis(self.settings.breaker.slow_call_ms);
                    self.record(
                        Record {
                            failed: false,
                            slow,
                        },
                        generation,
                    );
                    self.count(if result.is_ok() { "success" } else { "refused" });
                    return result.map_err(PolicyError::Failed);
                }
                Ok((
                    result,
                    Verdict::Failed {
                        retryable,
                        retry_after,
                    },
                )) => {
                    self.record(
                        Record {
                            failed: true,
                            slow: false,
                        },
                        generation,
                    );
                    (result.map_err(PolicyError::Failed), retryable, retry_after)
                }
                Err(_) => {
                    self.record(
                        Record {
                            failed: true,
                            slow: false,
                        },
                        generation,
                    );
                    (Err(PolicyError::Timeout), true, None)
                }
            };
            let error = match result {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let backoff = self.backoff(retries).max(retry_after.unwrap_or_default());
            let fits = Instant::now() + backoff < deadline;
            if !(idempotent
                && retryable
                && retries < self.settings.max_retries
                && fits
                && self.withdraw())
            {
                self.count(if matches!(error, PolicyError::Timeout) {
                    "timeout"
                } else {
                    "failure"
                });
                return Err(error);
            }
            retries += 1;
            metrics::counter!("remote_retries_total", "dependency" => self.name).increment(1);
            tracing::debug!(
                dependency = self.name,
                retry = retries,
                backoff_ms = backoff.as_millis() as u64,
                "retrying"
            );
            tokio::time::sleep(backoff).await;
        }
    }

    fn count(&self, outcome: &'static str) {
        metrics::counter!("remote_calls_total", "dependency" => self.name, "outcome" => outcome)
            .increment(1);
    }

    fn admit(&self) -> (Admission, u64) {
        let Ok(mut breaker) = self.breaker.lock() else {
            let retry_after = Duration::from_secs(1);
            return (Admission::Rejected { retry_after }, 0);
        };
        let (admission, change) = breaker.admit(Instant::now());
        if let Some(state) = change {
            self.transition(state);
        }
        (admission, breaker.generation())
    }

    fn record(&self, record: Record, generation: u64) {
        let Ok(mut breaker) = self.breaker.lock() else {
            return;
        };
        if let Some(state) = breaker.record(record, generation, Instant::now()) {
            self.transition(state);
        }
    }

    fn transition(&self, to: State) {
        metrics::gauge!("remote_breaker_state", "dependency" => self.name).set(to.gauge());
        metrics::counter!("remote_breaker_transitions_total", "dependency" => self.name, "to" => to.as_str()).increment(1);
        match to {
            State::Open => tracing::warn!(
                dependency = self.name,
                state = to.as_str(),
                "circuit breaker opened"
            ),
            _ => tracing::info!(
                dependency = self.name,
                state = to.as_str(),
                "circuit breaker {}",
                to.as_str()
            ),
        }
    }

    /// Full jitter: a random delay up to `base * 2^retry`, capped.
    fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .settings
            .retry_base_ms
            .saturating_mul(1u64 << retry.min(20))
            .min(self.settings.retry_max_ms);
        Duration::from_millis(rand::thread_rng().gen_range(0..=ceiling))
    }

    fn refill(&self, budget: &mut Budget) {
        let elapsed = budget.refilled.elapsed().as_secs_f64();
        budget.tokens =
            (budget.tokens + elapsed * self.settings.retry_budget_min_per_sec).min(BUDGET_CAP);
        budget.refilled = Instant::now();
    }

    fn deposit(&self) {
        if let Ok(mut budget) = self.budget.lock() {
            self.refill(&mut budget);
            budget.tokens =
                (budget.tokens + self.settings.retry_budget_percent / 100.0).min(BUDGET_CAP);
        }
    }

    fn withdraw(&self) -> bool {
        let Ok(mut budget) = self.budget.lock() else {
            return false;
        };
        self.refill(&mut budget);
        if budget.tokens >= 1.0 {
            budget.tokens -= 1.0;
            true
        } else {
            metrics::counter!("remote_retry_budget_exhausted_total", "dependency" => self.name)
                .increment(1);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn settings() -> PolicySettings {
        PolicySettings {
            attempt_timeout_ms: 200,
            deadline_ms: 2000,
            max_retries: 3,
            retry_base_ms: 10,
            retry_max_ms: 40,
            retry_budget_percent: 20.0,
            retry_budget_min_per_sec: 1.0,
            max_concurrent: 2,
            breaker: BreakerSettings {
                window_size: 10,
                minimum_calls: 5,
                failure_rate_threshold: 50.0,
                slow_call_rate_threshold: 100.0,
                slow_call_ms: 1000,
                wait_open_ms: 60_000,
                half_open_calls: 1,
            },
        }
    }

    const FAILED: Verdict = Verdict::Failed {
        retryable: true,
        retry_after: None,
    };

    #[tokio::test]
    async fn retries_idempotent_calls_until_they_succeed() {
        let calls = AtomicUsize::new(0);
        let policy = Policy::new("test", settings());
        let result: Result<u32, PolicyError<&str>> = policy
            .call(None, true, || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    (Err("down"), FAILED)
                } else {
                    (Ok(7), Verdict::Healthy)
                }
            })
            .await;
        assert_eq!(result, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn never_retries_what_is_not_idempotent_or_not_retryable() {
        let policy = Policy::new("test", settings());
        let calls = AtomicUsize::new(0);
        let result: Result<u32, _> = policy
            .call(None, false, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                (Err("down"), FAILED)
            })
            .await;
        assert_eq!(result, Err(PolicyError::Failed("down")));
        let refusal: Result<u32, _> = policy
            .call(None, true, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                (Err("422"), Verdict::Healthy)
            })
            .await;
        assert_eq!(refusal, Err(PolicyError::Failed("422")));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one attempt each");
    }

    #[tokio::test]
    async fn the_retry_budget_caps_retries_during_an_outage() {
        let mut s = settings();
        s.breaker.minimum_calls = 1000; // keep the breaker out of it
        s.retry_budget_min_per_sec = 0.0;
        let policy = Policy::new("test", s);
        let calls = AtomicUsize::new(0);
        for _ in 0..20 {
            let _: Result<u32, _> = policy
                .call(None, true, || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    (Err("down"), FAILED)
                })
                .await;
        }
        // 20 calls; the starting token plus 20 % of 20 calls buys about 5 retries, not 60.
        let made = calls.load(Ordering::SeqCst);
        assert!((20..=26).contains(&made), "{made} attempts");
    }

    #[tokio::test]
    async fn an_open_breaker_fails_fast_without_calling() {
        let mut s = settings();
        s.max_retries = 0;
        let policy = Policy::new("test", s);
        let calls = AtomicUsize::new(0);
        for _ in 0..5 {
            let _: Result<u32, _> = policy
                .call(None, true, || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    (Err("down"), FAILED)
                })
                .await;
        }
        assert_eq!(policy.state(), State::Open);
        let result: Result<u32, PolicyError<&str>> = policy
            .call(None, true, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                (Ok(1), Verdict::Healthy)
            })
            .await;
        assert!(matches!(result, Err(PolicyError::BreakerOpen { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 5, "no call while open");
    }

    #[tokio::test]
    async fn a_retry_waits_at_least_the_dependencys_retry_after_within_the_deadline() {
        let policy = Policy::new("test", settings());
        let calls = AtomicUsize::new(0);
        let asked = |ms| Verdict::Failed {
            retryable: true,
            retry_after: Some(Duration::from_millis(ms)),
        };
        let started = Instant::now();
        let result: Result<u32, PolicyError<&str>> = policy
            .call(None, true, || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => (Err("429"), asked(300)),
                    _ => (Ok(1), Verdict::Healthy),
                }
            })
            .await;
        assert_eq!(result, Ok(1));
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "the backoff alone is at most 10 ms; Retry-After asked for 300"
        );

        // A Retry-After beyond the deadline (2 s) is not waited for.
        let calls = AtomicUsize::new(0);
        let started = Instant::now();
        let result: Result<u32, PolicyError<&str>> = policy
            .call(None, true, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                (Err("429"), asked(60_000))
            })
            .await;
        assert_eq!(result, Err(PolicyError::Failed("429")));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_trial_call_dropped_by_its_caller_does_not_wedge_the_breaker() {
        let mut s = settings();
        s.max_retries = 0;
        s.breaker.wait_open_ms = 50;
        let policy = Policy::new("test", s);
        for _ in 0..5 {
            let _: Result<u32, _> = policy
                .call(None, true, || async { (Err("down"), FAILED) })
                .await;
        }
        assert_eq!(policy.state(), State::Open);
        tokio::time::sleep(Duration::from_millis(60)).await;

        // The one half-open trial hangs and its caller gives up on it.
        let hung = policy.call(None, true, || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            (Ok::<u32, &str>(1), Verdict::Healthy)
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(20), hung)
                .await
                .is_err()
        );
        assert_eq!(policy.state(), State::HalfOpen);

        let next: Result<u32, PolicyError<&str>> = policy
            .call(None, true, || async { (Ok(2), Verdict::Healthy) })
            .await;
        assert_eq!(next, Ok(2), "the slot came back, the trial ran");
        assert_eq!(policy.state(), State::Closed);
    }

    #[tokio::test]
    async fn timeouts_and_the_callers_deadline_bound_the_call() {
        let policy = Policy::new("test", settings());
        let started = Instant::now();
        let result: Result<u32, PolicyError<&str>> = policy
            .call(Some(Duration::from_millis(100)), true, || async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                (Ok(1), Verdict::Healthy)
            })
            .await;
        assert!(
            matches!(
                result,
                Err(PolicyError::Timeout | PolicyError::DeadlineExceeded)
            ),
            "{result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "the caller's 100 ms won"
        );
    }

    #[tokio::test]
    async fn the_bulkhead_rejects_excess_calls_at_once() {
        let policy = Arc::new(Policy::new("test", settings()));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut slow = Vec::new();
        for _ in 0..2 {
            let (policy, gate) = (Arc::clone(&policy), Arc::clone(&gate));
            slow.push(tokio::spawn(async move {
                let _: Result<u32, PolicyError<&str>> = policy
                    .call(None, true, || async {
                        gate.notified().await;
                        (Ok(1), Verdict::Healthy)
                    })
                    .await;
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        let third: Result<u32, PolicyError<&str>> = policy
            .call(None, true, || async { (Ok(1), Verdict::Healthy) })
            .await;
        assert_eq!(third, Err(PolicyError::BulkheadFull));
        assert!(
            started.elapsed() < Duration::from_millis(10),
            "rejected without waiting"
        );
        gate.notify_waiters();
        for s in slow {
            s.await.unwrap();
        }
    }
}

/// An admitted attempt that has not reported its outcome yet.
struct Pending<'a> {
    policy: &'a Policy,
    generation: u64,
    armed: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Ok(mut breaker) = self.policy.breaker.lock()
        {
            breaker.release(self.generation);
        }
    }
}

/// Partial settings of one dependency: what differs from `[resilience.default]`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// See [`PolicySettings::attempt_timeout_ms`].
    pub attempt_timeout_ms: Option<u64>,
    /// See [`PolicySettings::deadline_ms`].
    pub deadline_ms: Option<u64>,
    /// See [`PolicySettings::max_retries`].
    pub max_retries: Option<u32>,
    /// See [`PolicySettings::retry_base_ms`].
    pub retry_base_ms: Option<u64>,
    /// See [`PolicySettings::retry_max_ms`].
    pub retry_max_ms: Option<u64>,
    /// See [`PolicySettings::retry_budget_percent`].
    pub retry_budget_percent: Option<f64>,
    /// See [`PolicySettings::retry_budget_min_per_sec`].
    pub retry_budget_min_per_sec: Option<f64>,
    /// See [`PolicySettings::max_concurrent`].
    pub max_concurrent: Option<usize>,
    /// Breaker fields that differ.
    #[serde(default)]
    pub breaker: BreakerOverrides,
}

/// Partial breaker settings.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerOverrides {
    /// See [`BreakerSettings::window_size`].
    pub window_size: Option<usize>,
    /// See [`BreakerSettings::minimum_calls`].
    pub minimum_calls: Option<usize>,
    /// See [`BreakerSettings::failure_rate_threshold`].
    pub failure_rate_threshold: Option<f64>,
    /// See [`BreakerSettings::slow_call_rate_threshold`].
    pub slow_call_rate_threshold: Option<f64>,
    /// See [`BreakerSettings::slow_call_ms`].
    pub slow_call_ms: Option<u64>,
    /// See [`BreakerSettings::wait_open_ms`].
    pub wait_open_ms: Option<u64>,
    /// See [`BreakerSettings::half_open_calls`].
    pub half_open_calls: Option<usize>,
}

impl PolicySettings {
    /// Checks what the types alone cannot; the error names the field.
    ///
    /// # Errors
    /// `(field, message)` for the first setting that cannot work.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let b = &self.breaker;
        let percent = |v: f64| v > 0.0 && v <= 100.0;
        let checks: [(bool, &'static str, &str); 11] = [
            (
                self.attempt_timeout_ms >= 1,
                "attempt_timeout_ms",
                "must be at least 1",
            ),
            (self.deadline_ms >= 1, "deadline_ms", "must be at least 1"),
            (
                self.retry_base_ms <= self.retry_max_ms,
                "retry_base_ms",
                "must not exceed retry_max_ms",
            ),
            (
                (0.0..=100.0).contains(&self.retry_budget_percent),
                "retry_budget_percent",
                "must be between 0 and 100",
            ),
            (
                self.retry_budget_min_per_sec >= 0.0 && self.retry_budget_min_per_sec.is_finite(),
                "retry_budget_min_per_sec",
                "must not be negative",
            ),
            (
                self.max_concurrent >= 1,
                "max_concurrent",
                "must be at least 1",
            ),
            (
                b.window_size >= 1,
                "breaker.window_size",
                "must be at least 1",
            ),
            (
                (1..=b.window_size).contains(&b.minimum_calls),
                "breaker.minimum_calls",
                "must be between 1 and breaker.window_size",
            ),
            (
                percent(b.failure_rate_threshold) && percent(b.slow_call_rate_threshold),
                "breaker.failure_rate_threshold",
                "and breaker.slow_call_rate_threshold must be above 0 and at most 100",
            ),
            (
                b.wait_open_ms >= 1,
                "breaker.wait_open_ms",
                "must be at least 1",
            ),
            (
                b.half_open_calls >= 1,
                "breaker.half_open_calls",
                "must be at least 1",
            ),
        ];
        match checks.into_iter().find(|(ok, ..)| !ok) {
            Some((_, field, message)) => Err((field, message.to_owned())),
            None => Ok(()),
        }
    }

    /// These settings with `overrides` applied.
    pub fn with(&self, o: &Overrides) -> PolicySettings {
        let b = &self.breaker;
        let ob = &o.breaker;
        PolicySettings {
            attempt_timeout_ms: o.attempt_timeout_ms.unwrap_or(self.attempt_timeout_ms),
            deadline_ms: o.deadline_ms.unwrap_or(self.deadline_ms),
            max_retries: o.max_retries.unwrap_or(self.max_retries),
            retry_base_ms: o.retry_base_ms.unwrap_or(self.retry_base_ms),
            retry_max_ms: o.retry_max_ms.unwrap_or(self.retry_max_ms),
            retry_budget_percent: o.retry_budget_percent.unwrap_or(self.retry_budget_percent),
            retry_budget_min_per_sec: o
                .retry_budget_min_per_sec
                .unwrap_or(self.retry_budget_min_per_sec),
            max_concurrent: o.max_concurrent.unwrap_or(self.max_concurrent),
            breaker: BreakerSettings {
                window_size: ob.window_size.unwrap_or(b.window_size),
                minimum_calls: ob.minimum_calls.unwrap_or(b.minimum_calls),
                failure_rate_threshold: ob
                    .failure_rate_threshold
                    .unwrap_or(b.failure_rate_threshold),
                slow_call_rate_threshold: ob
                    .slow_call_rate_threshold
                    .unwrap_or(b.slow_call_rate_threshold),
                slow_call_ms: ob.slow_call_ms.unwrap_or(b.slow_call_ms),
                wait_open_ms: ob.wait_open_ms.unwrap_or(b.wait_open_ms),
                half_open_calls: ob.half_open_calls.unwrap_or(b.half_open_calls),
            },
        }
    }
}

/// `[resilience]`: the default policy and each dependency's differences.
/// (No `deny_unknown_fields`: serde cannot combine it with `flatten`; the
/// app checks the dependency names instead.)
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct ResilienceSettings {
    /// Every dependency's policy unless it says otherwise.
    pub default: PolicySettings,
    /// `[resilience.<dependency>]`: differences per dependency (`catalog`,
    /// `user`, `inventory`, `notification`, `smtp`, `webhooks`).
    #[serde(flatten)]
    pub dependencies: std::collections::HashMap<String, Overrides>,
}

impl ResilienceSettings {
    /// The settings of `dependency`.
    pub fn for_dependency(&self, dependency: &str) -> PolicySettings {
        match self.dependencies.get(dependency) {
            Some(o) => self.default.with(o),
            None => self.default.clone(),
        }
    }
}
