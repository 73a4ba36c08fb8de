//! [`Policy`]: the bulkhead, deadline, breaker, timeout and retries around
//! one dependency's calls, and what an attempt and the whole call report.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng as _;
use tokio::sync::Semaphore;

use crate::PolicySettings;
use crate::breaker::{Admission, Breaker, Record, State};

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
///
/// Its bulkhead, deadline and retry budget are the dependency's; its
/// breaker is too, unless the calls name a destination ([`Policy::call_to`]):
/// then each destination has a breaker of its own, so that one destination
/// failing (one webhook receiver down) does not stop the calls to the others.
pub struct Policy {
    name: &'static str,
    settings: PolicySettings,
    breakers: Mutex<Breakers>,
    permits: Semaphore,
    budget: Mutex<Budget>,
}

/// The breaker of the calls that name no destination, and one per
/// destination named, with when a call to it last started.
#[derive(Debug)]
struct Breakers {
    own: Breaker,
    by_destination: HashMap<Box<str>, (Breaker, Instant)>,
}

/// Destinations whose breaker is kept while closed. Beyond, closed ones
/// are forgotten (they lose only their recent outcomes); open and
/// half-open ones are always kept.
const DESTINATIONS_KEPT: usize = 1024;

impl Breakers {
    /// The breaker a call to `destination` starts under, made if new.
    fn starting(
        &mut self,
        destination: Option<&str>,
        settings: &PolicySettings,
        now: Instant,
    ) -> &mut Breaker {
        let Some(destination) = destination else {
            return &mut self.own;
        };
        if !self.by_destination.contains_key(destination)
            && self.by_destination.len() >= DESTINATIONS_KEPT
        {
            self.by_destination
                .retain(|_, (breaker, _)| breaker.state() != State::Closed);
        }
        let (breaker, used) = self
            .by_destination
            .entry(destination.into())
            .or_insert_with(|| (Breaker::new(settings.breaker.clone()), now));
        *used = now;
        breaker
    }

    /// The breaker a call to `destination` started under, unless it was
    /// forgotten since (its outcome then counts nowhere).
    fn started(&mut self, destination: Option<&str>) -> Option<&mut Breaker> {
        match destination {
            None => Some(&mut self.own),
            Some(destination) => self
                .by_destination
                .get_mut(destination)
                .map(|(breaker, _)| breaker),
        }
    }

    /// The worst state of them all, for the dependency's gauge: open if
    /// any is open.
    fn worst(&self) -> State {
        let rank = |state: State| match state {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
        };
        std::iter::once(&self.own)
            .chain(self.by_destination.values().map(|(breaker, _)| breaker))
            .map(Breaker::state)
            .max_by_key(|state| rank(*state))
            .unwrap_or(State::Closed)
    }
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
            breakers: Mutex::new(Breakers {
                own: Breaker::new(settings.breaker.clone()),
                by_destination: HashMap::new(),
            }),
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

    /// The longest a call may take, retries included.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.settings.deadline_ms)
    }

    /// The longest one attempt may take.
    pub fn attempt_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.attempt_timeout_ms)
    }

    /// The state now of the breaker of calls that name no destination
    /// (readiness).
    pub fn state(&self) -> State {
        self.breakers
            .lock()
            .map(|b| b.own.state())
            .unwrap_or(State::Open)
    }

    /// How long the breaker of calls that name no destination still turns
    /// every call away ([`Breaker::rejecting_for`](crate::breaker::Breaker::rejecting_for)):
    /// a caller with work queued for the dependency (a sender with its
    /// backlog) waits that long instead of taking work only to defer it.
    pub fn rejecting_for(&self) -> Option<Duration> {
        self.breakers
            .lock()
            .ok()
            .and_then(|b| b.own.rejecting_for(Instant::now()))
    }

    /// The state now of `destination`'s breaker ([`Policy::call_to`]).
    pub fn state_of(&self, destination: &str) -> State {
        self.breakers
            .lock()
            .map(|b| {
                b.by_destination
                    .get(destination)
                    .map_or(State::Closed, |(breaker, _)| breaker.state())
            })
            .unwrap_or(State::Open)
    }

    /// Forgets the breakers of destinations no call has started to for
    /// twice the breaker's open wait, at least a minute: a receiver whose
    /// last message gave up, or whose subscription went, would otherwise
    /// keep its breaker open, and the dependency's gauge with it, for
    /// good. Called from time to time by the caller that names destinations;
    /// the gauge is set afresh.
    pub fn forget_idle_destinations(&self) {
        let idle = Duration::from_millis(self.settings.breaker.wait_open_ms.saturating_mul(2))
            .max(Duration::from_secs(60));
        self.forget_destinations_idle_for(idle);
    }

    fn forget_destinations_idle_for(&self, idle: Duration) {
        let Ok(mut breakers) = self.breakers.lock() else {
            return;
        };
        let now = Instant::now();
        breakers
            .by_destination
            .retain(|_, (_, used)| now.saturating_duration_since(*used) < idle);
        metrics::gauge!("remote_breaker_state", "dependency" => self.name)
            .set(breakers.worst().gauge());
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
        attempt: F,
    ) -> Result<T, PolicyError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = (Result<T, E>, Verdict)>,
    {
        self.run(None, caller_deadline, idempotent, attempt).await
    }

    /// [`Policy::call`], for a call to `destination` (a webhook receiver's
    /// origin): its breaker is that destination's own. The bulkhead,
    /// deadline and retry budget stay the dependency's.
    ///
    /// # Errors
    /// As [`Policy::call`].
    pub async fn call_to<T, E, F, Fut>(
        &self,
        destination: &str,
        caller_deadline: Option<Duration>,
        idempotent: bool,
        attempt: F,
    ) -> Result<T, PolicyError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = (Result<T, E>, Verdict)>,
    {
        self.run(Some(destination), caller_deadline, idempotent, attempt)
            .await
    }

    async fn run<T, E, F, Fut>(
        &self,
        destination: Option<&str>,
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
            let generation = match self.admit(destination) {
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
                destination,
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
                        destination,
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
                        destination,
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
                        destination,
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
            // Checked: a peer's `Retry-After` may be any number.
            let fits = Instant::now()
                .checked_add(backoff)
                .is_some_and(|due| due < deadline);
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

    fn admit(&self, destination: Option<&str>) -> (Admission, u64) {
        let Ok(mut breakers) = self.breakers.lock() else {
            let retry_after = Duration::from_secs(1);
            return (Admission::Rejected { retry_after }, 0);
        };
        let now = Instant::now();
        let breaker = breakers.starting(destination, &self.settings, now);
        let (admission, change) = breaker.admit(now);
        let generation = breaker.generation();
        if let Some(state) = change {
            self.transition(&breakers, destination, state);
        }
        (admission, generation)
    }

    fn record(&self, destination: Option<&str>, record: Record, generation: u64) {
        let Ok(mut breakers) = self.breakers.lock() else {
            return;
        };
        let Some(breaker) = breakers.started(destination) else {
            return;
        };
        if let Some(state) = breaker.record(record, generation, Instant::now()) {
            self.transition(&breakers, destination, state);
        }
    }

    /// A breaker changed to `to`: the dependency's gauge shows the worst of
    /// its breakers (one destination's open breaker is the dependency's).
    fn transition(&self, breakers: &Breakers, destination: Option<&str>, to: State) {
        metrics::gauge!("remote_breaker_state", "dependency" => self.name)
            .set(breakers.worst().gauge());
        metrics::counter!("remote_breaker_transitions_total", "dependency" => self.name, "to" => to.as_str()).increment(1);
        let destination = destination.unwrap_or("");
        match to {
            State::Open => tracing::warn!(
                dependency = self.name,
                destination,
                state = to.as_str(),
                "circuit breaker opened"
            ),
            _ => tracing::info!(
                dependency = self.name,
                destination,
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

/// An admitted attempt that has not reported its outcome yet.
struct Pending<'a> {
    policy: &'a Policy,
    destination: Option<&'a str>,
    generation: u64,
    armed: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Ok(mut breakers) = self.policy.breakers.lock()
            && let Some(breaker) = breakers.started(self.destination)
        {
            breaker.release(self.generation);
        }
    }
}

#[cfg(test)]
mod tests;
