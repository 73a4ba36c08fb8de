//! Tests of the dispatcher's retry backoff: exponential growth, full jitter and a cap.

use super::*;

fn dispatcher(base: u64, max: u64) -> Dispatcher {
    Dispatcher {
        subscriptions: Vec::new(),
        max_attempts: 5,
        retry_base: Duration::from_millis(base),
        retry_max: Duration::from_millis(max),
        pause_in_handler: Duration::ZERO,
    }
}

#[test]
fn backoff_grows_exponentially_with_full_jitter_and_a_cap() {
    let d = dispatcher(100, 1000);
    for attempt in 1..=8u32 {
        let ceiling = (100u64 << (attempt - 1)).min(1000);
        let samples: Vec<u64> = (0..200)
            .map(|_| d.backoff(attempt).as_millis() as u64)
            .collect();
        assert!(
            samples.iter().all(|&s| s <= ceiling),
            "attempt {attempt}: {samples:?}"
        );
        // Jitter: not every delay is the same.
        assert!(
            samples.iter().any(|&s| s != samples[0]),
            "attempt {attempt}"
        );
    }
}
