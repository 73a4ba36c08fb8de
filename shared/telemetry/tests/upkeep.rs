//! Histogram samples do not pile up in memory between scrapes: the upkeep
//! task folds them into their buckets (issue 11's soak grew without it).
//!
//! The heap is measured by a counting allocator, so this test is a binary of
//! its own and runs one test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

#[allow(unsafe_code)]
// SAFETY: every call is passed on to the system allocator unchanged; the
// counter only adds and subtracts the sizes it is given.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SAMPLES: usize = 100_000;
const ROUNDS: usize = 5;

/// Records `ROUNDS` times `SAMPLES` latencies, letting `settle` run after
/// each round, and answers how many heap bytes the last four rounds added.
/// (Freed blocks are reclaimed one epoch late, so the first round is the
/// baseline.)
async fn growth(settle: impl AsyncFn()) -> isize {
    let mut after_first = 0;
    for round in 0..ROUNDS {
        for i in 0..SAMPLES {
            metrics::histogram!("upkeep_test_seconds").record(i as f64 / 1e6);
        }
        settle().await;
        if round == 0 {
            after_first = LIVE.load(Ordering::Relaxed);
        }
    }
    LIVE.load(Ordering::Relaxed) - after_first
}

#[tokio::test]
async fn histogram_samples_are_drained_without_a_scrape() {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&[0.01, 0.1, 1.0])
        .expect("buckets")
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).expect("the only recorder");
    let one_round = (SAMPLES * 8) as isize;

    // With the upkeep task running, samples are folded into the buckets.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let upkeep = tokio::spawn(telemetry::metrics_upkeep(
        handle.clone(),
        Duration::from_millis(10),
        stopped,
    ));
    let drained = growth(async || tokio::time::sleep(Duration::from_millis(50)).await).await;
    assert!(
        drained < one_round,
        "{ROUNDS} rounds of {SAMPLES} samples grew the heap by {drained} bytes with the upkeep task running"
    );
    stop.send(true).expect("the task listens");
    tokio::time::timeout(Duration::from_secs(5), upkeep)
        .await
        .expect("the upkeep task stops when told")
        .expect("it does not panic");

    // Without it, every sample waits in memory for a render.
    let kept = growth(async || tokio::time::sleep(Duration::from_millis(50)).await).await;
    assert!(
        kept >= 3 * one_round,
        "without upkeep the heap grew by only {kept} bytes: the test measures nothing"
    );

    let rendered = handle.render();
    assert!(
        rendered.contains(&format!(
            "upkeep_test_seconds_count {}",
            2 * ROUNDS * SAMPLES
        )),
        "every sample is counted: {rendered}"
    );
}
