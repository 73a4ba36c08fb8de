//! Tests of the breaker's state machine, with time passed in: opening on
//! rates, half-open trials, and outcomes from an earlier state.

use super::*;

fn settings() -> BreakerSettings {
    BreakerSettings {
        window_size: 10,
        minimum_calls: 4,
        failure_rate_threshold: 50.0,
        slow_call_rate_threshold: 100.0,
        slow_call_ms: 1000,
        wait_open_ms: 5000,
        half_open_calls: 2,
    }
}

const OK: Record = Record {
    failed: false,
    slow: false,
};
const FAIL: Record = Record {
    failed: true,
    slow: false,
};
const SLOW: Record = Record {
    failed: false,
    slow: true,
};

#[test]
fn stays_closed_below_the_minimum_number_of_calls() {
    let mut b = Breaker::new(settings());
    let now = Instant::now();
    for _ in 0..3 {
        assert_eq!(b.record(FAIL, b.generation(), now), None);
    }
    assert_eq!(
        b.state(),
        State::Closed,
        "3 failures, but fewer than 4 calls"
    );
    assert_eq!(b.record(FAIL, b.generation(), now), Some(State::Open));
}

#[test]
fn opens_at_the_failure_rate_over_the_sliding_window() {
    let mut b = Breaker::new(settings());
    let now = Instant::now();
    for r in [OK, OK, OK, OK, OK, OK, FAIL, FAIL, FAIL, FAIL] {
        assert_eq!(b.record(r, b.generation(), now), None, "40 % is below 50 %");
    }
    // The window slides: an old success leaves, a failure comes in: 50 %.
    assert_eq!(b.record(FAIL, b.generation(), now), Some(State::Open));
}

#[test]
fn slow_calls_count_towards_their_own_threshold() {
    let mut s = settings();
    s.slow_call_rate_threshold = 50.0;
    let mut b = Breaker::new(s);
    let now = Instant::now();
    for r in [OK, SLOW, OK] {
        assert_eq!(b.record(r, b.generation(), now), None);
    }
    assert_eq!(
        b.record(SLOW, b.generation(), now),
        Some(State::Open),
        "2 of 4 slow"
    );
}

#[test]
fn open_rejects_until_the_wait_then_admits_limited_trials() {
    let mut b = Breaker::new(settings());
    let t0 = Instant::now();
    for _ in 0..4 {
        b.record(FAIL, b.generation(), t0);
    }
    let (admission, change) = b.admit(t0 + Duration::from_secs(1));
    assert_eq!(
        admission,
        Admission::Rejected {
            retry_after: Duration::from_secs(4)
        }
    );
    assert_eq!(change, None);
    let later = t0 + Duration::from_secs(5);
    assert_eq!(
        b.admit(later),
        (Admission::Permitted, Some(State::HalfOpen))
    );
    assert_eq!(b.admit(later).0, Admission::Permitted, "the second trial");
    assert!(
        matches!(b.admit(later).0, Admission::Rejected { .. }),
        "only two trials"
    );
}

#[test]
fn successful_trials_close_and_a_failed_trial_reopens() {
    let t0 = Instant::now();
    let open = || {
        let mut b = Breaker::new(settings());
        for _ in 0..4 {
            b.record(FAIL, b.generation(), t0);
        }
        b
    };
    let later = t0 + Duration::from_secs(5);

    let mut b = open();
    b.admit(later);
    b.admit(later);
    assert_eq!(
        b.record(OK, b.generation(), later),
        None,
        "waits for every trial"
    );
    assert_eq!(b.record(OK, b.generation(), later), Some(State::Closed));
    assert_eq!(
        b.record(FAIL, b.generation(), later),
        None,
        "a fresh window after closing"
    );

    let mut b = open();
    b.admit(later);
    b.admit(later);
    b.record(OK, b.generation(), later);
    assert_eq!(
        b.record(FAIL, b.generation(), later),
        Some(State::Open),
        "1 of 2 trials failed: 50 %"
    );
    assert!(
        matches!(b.admit(later).0, Admission::Rejected { .. }),
        "a new wait"
    );
}

/// A breaker opened at `t0` by four failures.
fn opened_at(t0: Instant) -> Breaker {
    let mut b = Breaker::new(settings());
    for _ in 0..4 {
        b.record(FAIL, b.generation(), t0);
    }
    b
}

#[test]
fn a_cancelled_trial_gives_its_slot_back() {
    let t0 = Instant::now();
    let later = t0 + Duration::from_secs(5);
    let mut b = opened_at(t0);
    b.admit(later);
    let trial = b.generation();
    b.admit(later);
    assert!(matches!(b.admit(later).0, Admission::Rejected { .. }));
    b.release(trial);
    assert_eq!(
        b.admit(later).0,
        Admission::Permitted,
        "the slot is free again"
    );
}

#[test]
fn an_outcome_from_before_the_breaker_opened_does_not_count_as_a_trial() {
    let t0 = Instant::now();
    let later = t0 + Duration::from_secs(5);
    let mut b = Breaker::new(settings());
    b.admit(t0);
    let admitted_closed = b.generation();
    for _ in 0..4 {
        b.record(FAIL, b.generation(), t0);
    }
    b.admit(later);
    assert_eq!(b.state(), State::HalfOpen);
    // The call admitted while closed finishes now, successfully.
    assert_eq!(b.record(OK, admitted_closed, later), None);
    assert_eq!(b.record(OK, admitted_closed, later), None);
    assert_eq!(
        b.state(),
        State::HalfOpen,
        "stale successes do not close it"
    );
}

#[test]
fn an_open_breaker_says_how_long_it_still_rejects_without_moving() {
    let t0 = Instant::now();
    let mut b = Breaker::new(settings());
    assert_eq!(b.rejecting_for(t0), None, "closed");
    b = opened_at(t0);
    assert_eq!(
        b.rejecting_for(t0 + Duration::from_secs(1)),
        Some(Duration::from_secs(4))
    );
    assert_eq!(b.state(), State::Open, "asking moves nothing");
    assert_eq!(
        b.rejecting_for(t0 + Duration::from_secs(5)),
        None,
        "its wait is over: the next call is a trial"
    );
    assert_eq!(b.state(), State::Open);
    b.admit(t0 + Duration::from_secs(5));
    assert_eq!(
        b.rejecting_for(t0 + Duration::from_secs(5)),
        None,
        "half-open"
    );
}
