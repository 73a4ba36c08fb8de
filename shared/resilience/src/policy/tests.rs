//! Tests of [`Policy`](super::Policy): retries, the retry budget, the breaker
//! in the call path, deadlines and the bulkhead.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::BreakerSettings;

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
async fn one_destination_failing_opens_its_own_breaker_only() {
    let mut s = settings();
    s.max_retries = 0;
    let policy = Policy::new("test", s);
    let calls = AtomicUsize::new(0);
    let down = "http://down.example";
    let up = "http://up.example";
    for _ in 0..5 {
        let _: Result<u32, _> = policy
            .call_to(down, None, true, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                (Err("down"), FAILED)
            })
            .await;
    }
    assert_eq!(policy.state_of(down), State::Open);
    let refused: Result<u32, PolicyError<&str>> = policy
        .call_to(down, None, true, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            (Ok(1), Verdict::Healthy)
        })
        .await;
    assert!(matches!(refused, Err(PolicyError::BreakerOpen { .. })));
    assert_eq!(calls.load(Ordering::SeqCst), 5, "no call to it while open");
    // Another destination, and the calls that name none, go on.
    let other: Result<u32, PolicyError<&str>> = policy
        .call_to(up, None, true, || async { (Ok(2), Verdict::Healthy) })
        .await;
    assert_eq!(other, Ok(2));
    assert_eq!(policy.state_of(up), State::Closed);
    assert_eq!(policy.state(), State::Closed);
    let own: Result<u32, PolicyError<&str>> = policy
        .call(None, true, || async { (Ok(3), Verdict::Healthy) })
        .await;
    assert_eq!(own, Ok(3));
    // The dependency's gauge shows the worst of its breakers.
    assert_eq!(policy.breakers.lock().unwrap().worst(), State::Open);
}

#[tokio::test]
async fn closed_breakers_of_many_destinations_are_forgotten_open_ones_kept() {
    let mut s = settings();
    s.max_retries = 0;
    let policy = Policy::new("test", s);
    for _ in 0..5 {
        let _: Result<u32, _> = policy
            .call_to("down", None, true, || async { (Err("down"), FAILED) })
            .await;
    }
    for i in 0..DESTINATIONS_KEPT + 10 {
        let _: Result<u32, PolicyError<&str>> = policy
            .call_to(&format!("up-{i}"), None, true, || async {
                (Ok(1), Verdict::Healthy)
            })
            .await;
    }
    let kept = policy.breakers.lock().unwrap().by_destination.len();
    assert!(kept <= DESTINATIONS_KEPT, "{kept} breakers kept");
    assert_eq!(policy.state_of("down"), State::Open);
}

#[tokio::test]
async fn the_breaker_of_a_destination_no_longer_called_is_forgotten() {
    let mut s = settings();
    s.max_retries = 0;
    let policy = Policy::new("test", s);
    for _ in 0..5 {
        let _: Result<u32, _> = policy
            .call_to("gone", None, true, || async { (Err("down"), FAILED) })
            .await;
    }
    assert_eq!(policy.breakers.lock().unwrap().worst(), State::Open);
    // Called just now: kept.
    policy.forget_destinations_idle_for(Duration::from_secs(60));
    assert_eq!(policy.state_of("gone"), State::Open);
    tokio::time::sleep(Duration::from_millis(20)).await;
    policy.forget_destinations_idle_for(Duration::from_millis(10));
    assert_eq!(policy.state_of("gone"), State::Closed);
    assert_eq!(policy.breakers.lock().unwrap().worst(), State::Closed);
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

    // Nor one no clock can reach: the call fails as it came, no panic.
    let result: Result<u32, PolicyError<&str>> = policy
        .call(None, true, || async {
            let asked = Verdict::Failed {
                retryable: true,
                retry_after: Some(Duration::MAX),
            };
            (Err("503"), asked)
        })
        .await;
    assert_eq!(result, Err(PolicyError::Failed("503")));
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
        started.elapsed() < Duration::from_secs(2),
        "the caller's 100 ms won, not the call's 5 s"
    );
}

#[tokio::test]
async fn the_bulkhead_rejects_excess_calls_at_once() {
    // Attempts that cannot time out while the test looks: the slots stay
    // taken however slow the machine.
    let policy = Arc::new(Policy::new(
        "test",
        PolicySettings {
            attempt_timeout_ms: 60_000,
            deadline_ms: 60_000,
            ..settings()
        },
    ));
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
        started.elapsed() < Duration::from_millis(500),
        "rejected without waiting for a slot (they are held a minute)"
    );
    gate.notify_waiters();
    for s in slow {
        s.await.unwrap();
    }
}
