//! A circuit breaker with resilience4j's semantics, count-based.
//!
//! - **Closed**: outcomes go into a sliding window of the last
//!   `window_size` calls. Once at least `minimum_calls` are recorded, the
//!   breaker opens when the failure rate or the slow-call rate reaches its
//!   threshold (slow calls are successful calls slower than `slow_call`).
//! - **Open**: every call is rejected, without touching the dependency,
//!   until `wait_open` has passed.
//! - **Half-open**: `half_open_calls` trial calls are let through (others
//!   are rejected); when all have finished, the same rates decide: below
//!   the thresholds closes (with an empty window), otherwise it opens again.
//!
//! An outcome counts only in the state that admitted its call (a call that
//! started before the breaker opened is no trial), and a call cancelled
//! before its outcome gives its half-open slot back.
//!
//! Time is passed in, so the state machine is tested without sleeping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Window, thresholds and timings of one dependency's circuit breaker.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    /// Calls remembered while closed.
    pub window_size: usize,
    /// Calls needed before rates are computed.
    pub minimum_calls: usize,
    /// Failure rate (percent) that opens the breaker.
    pub failure_rate_threshold: f64,
    /// Slow-call rate (percent) that opens the breaker.
    pub slow_call_rate_threshold: f64,
    /// A call taking longer than this counts as slow, ms.
    pub slow_call_ms: u64,
    /// How long the breaker stays open, ms.
    pub wait_open_ms: u64,
    /// Trial calls let through when half-open.
    pub half_open_calls: usize,
}

/// The breaker's state, as shown in metrics (0, 1, 2) and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls are rejected.
    Open,
    /// A few trial calls decide.
    HalfOpen,
}

impl State {
    /// Name in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    /// Value of the state gauge.
    pub fn gauge(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::Open => 1.0,
            State::HalfOpen => 2.0,
        }
    }
}

/// One finished call, as the breaker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// It failed (a failure of the dependency, not a 4xx answer).
    pub failed: bool,
    /// It succeeded, slowly.
    pub slow: bool,
}

/// The state machine.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: State,
    window: VecDeque<Record>,
    opened_at: Option<Instant>,
    trials_started: usize,
    trials: Vec<Record>,
    /// Bumped on every state change: an outcome counts only in the state
    /// (generation) that admitted its call.
    generation: u64,
}

/// A call may go ahead (and must report its outcome), or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The call may go ahead.
    Permitted,
    /// Rejected; the breaker should let calls through again after this.
    Rejected {
        /// Time until the breaker may admit trial calls.
        retry_after: Duration,
    },
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Breaker {
        Breaker {
            settings,
            state: State::Closed,
            window: VecDeque::new(),
            opened_at: None,
            trials_started: 0,
            trials: Vec::new(),
            generation: 0,
        }
    }

    /// The generation a call admitted now belongs to; pass it back to
    /// [`Breaker::record`] or [`Breaker::release`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A call admitted in `admitted_in` ended without an outcome (it was
    /// cancelled): its half-open trial slot is given back.
    pub fn release(&mut self, admitted_in: u64) {
        if self.state == State::HalfOpen
            && admitted_in == self.generation
            && self.trials_started > self.trials.len()
        {
            self.trials_started -= 1;
        }
    }

    /// How long the breaker still turns every call away: while it is open,
    /// the rest of its wait; `None` when a call could start now (closed,
    /// half-open, or open with its wait over: the next call is a trial).
    /// Changes nothing.
    pub fn rejecting_for(&self, now: Instant) -> Option<Duration> {
        if self.state != State::Open {
            return None;
        }
        let wait = Duration::from_millis(self.settings.wait_open_ms);
        let elapsed = now.saturating_duration_since(self.opened_at.unwrap_or(now));
        wait.checked_sub(elapsed).filter(|left| !left.is_zero())
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether a call may start now. Returns the admission and, if the
    /// state changed (open to half-open), the new state.
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<State>) {
        match self.state {
            State::Closed => (Admission::Permitted, None),
            State::Open => match self.rejecting_for(now) {
                Some(left) => (Admission::Rejected { retry_after: left }, None),
                None => {
                    self.state = State::HalfOpen;
                    self.generation += 1;
                    self.trials_started = 1;
                    self.trials.clear();
                    (Admission::Permitted, Some(State::HalfOpen))
                }
            },
            State::HalfOpen => {
                if self.trials_started < self.settings.half_open_calls.max(1) {
                    self.trials_started += 1;
                    (Admission::Permitted, None)
                } else {
                    (
                        Admission::Rejected {
                            retry_after: Duration::from_millis(
                                self.settings.wait_open_ms.min(1000),
                            ),
                        },
                        None,
                    )
                }
            }
        }
    }

    /// Records a finished call admitted in generation `admitted_in`;
    /// returns the new state if it changed. A call admitted in an earlier
    /// state (before the breaker opened, or closed again) does not count.
    pub fn record(&mut self, record: Record, admitted_in: u64, now: Instant) -> Option<State> {
        if admitted_in != self.generation {
            return None;
        }
        match self.state {
            State::Closed => {
                self.window.push_back(record);
                while self.window.len() > self.settings.window_size.max(1) {
                    self.window.pop_front();
                }
                if self.window.len() >= self.settings.minimum_calls.max(1)
                    && self.over_thresholds(self.window.iter())
                {
                    return Some(self.open(now));
                }
                None
            }
            // Not reached: nothing is admitted while open.
            State::Open => None,
            State::HalfOpen => {
                self.trials.push(record);
                if self.trials.len() < self.settings.half_open_calls.max(1) {
                    return None;
                }
                if self.over_thresholds(self.trials.iter()) {
                    Some(self.open(now))
                } else {
                    self.state = State::Closed;
                    self.generation += 1;
                    self.window.clear();
                    self.trials.clear();
                    Some(State::Closed)
                }
            }
        }
    }

    fn open(&mut self, now: Instant) -> State {
        self.state = State::Open;
        self.generation += 1;
        self.opened_at = Some(now);
        self.trials.clear();
        self.trials_started = 0;
        State::Open
    }

    fn over_thresholds<'a>(&self, records: impl Iterator<Item = &'a Record> + Clone) -> bool {
        let total = records.clone().count() as f64;
        if total == 0.0 {
            return false;
        }
        let failed = records.clone().filter(|r| r.failed).count() as f64;
        let slow = records.filter(|r| r.slow).count() as f64;
        failed * 100.0 / total >= self.settings.failure_rate_threshold
            || slow * 100.0 / total >= self.settings.slow_call_rate_threshold
    }
}

#[cfg(test)]
mod tests;
