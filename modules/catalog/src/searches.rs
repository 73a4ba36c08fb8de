//! A bulkhead for the searches that rank every match.
//!
//! A search of several words (or with operators, or in another order than
//! relevance) reads and ranks every product it matches: milliseconds of
//! the database's CPU each, where a product read or a one-word search takes
//! a tenth of one. Unbounded, a burst of them runs all at once: they share
//! the database's cores in time slices, every one of them finishes late,
//! and they hold the catalog's connections that product reads need. Here
//! at most `max_concurrent` run at once; the others wait their turn, in
//! order, for at most `queue_timeout_ms`, then get 503 with `Retry-After`.
//! Measured on 2 cores shared with the database (ADR 0022): beside a flood
//! of two-word searches, a one-word search answered 7 times as many
//! requests, its p50 from 22 to 2.6 ms; two-word searches alone with 8
//! connections, p99 -20 % at a rate 13 % lower.

use std::sync::Arc;
use std::time::Duration;

use catalog_api::CatalogError;
use kernel::{Degradation, Failure};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `[catalog.search]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSettings {
    /// Searches that rank every match running at once; 0: one more than
    /// this machine's CPUs (the database's, when it runs beside the shop).
    pub max_concurrent: usize,
    /// How long a search waits for its turn before 503, milliseconds.
    pub queue_timeout_ms: u64,
}

/// The bulkhead; cheap to clone (one semaphore shared by the clones).
#[derive(Debug, Clone)]
pub struct Searches {
    turns: Arc<Semaphore>,
    wait: Duration,
}

impl Searches {
    /// As `settings` say.
    pub fn new(settings: &SearchSettings) -> Searches {
        let at_once = match settings.max_concurrent {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get() + 1),
            n => n,
        };
        Searches {
            turns: Arc::new(Semaphore::new(at_once)),
            wait: Duration::from_millis(settings.queue_timeout_ms),
        }
    }

    /// A turn, held until the returned permit is dropped.
    ///
    /// # Errors
    /// No turn came within the queue timeout: `Degradation::Overloaded`
    /// (503, `Retry-After`).
    pub async fn turn(&self) -> Result<OwnedSemaphorePermit, CatalogError> {
        match tokio::time::timeout(self.wait, Arc::clone(&self.turns).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // Timed out, or closed (never: nothing closes it).
            Ok(Err(_)) | Err(_) => {
                metrics::counter!("catalog_searches_refused_total").increment(1);
                tracing::warn!(
                    wait_ms = self.wait.as_millis(),
                    "a search that ranks every match found no turn in time"
                );
                Err(Failure::Degraded(Degradation::Overloaded).into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_search_waits_its_turn_and_is_refused_when_none_comes() {
        let searches = Searches::new(&SearchSettings {
            max_concurrent: 2,
            queue_timeout_ms: 50,
        });
        let first = searches.turn().await.ok();
        let second = searches.turn().await.ok();
        assert!(first.is_some() && second.is_some(), "two at once");

        let refused = searches.turn().await.unwrap_err();
        assert_eq!(kernel::ProblemCode::status(&refused), 503);
        assert!(matches!(
            refused,
            CatalogError::Common(Failure::Degraded(Degradation::Overloaded))
        ));

        // A turn given back goes to the one waiting.
        let waiting = tokio::spawn({
            let searches = searches.clone();
            async move { searches.turn().await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(first);
        assert!(waiting.await.unwrap(), "the freed turn was taken");
        drop(second);
    }

    #[test]
    fn only_lists_that_may_read_every_match_take_a_turn() {
        use catalog_api::{ProductFilter, ProductSort};

        use crate::repo::ranks_every_match;
        let search = |q: &str| ProductFilter {
            q: Some(q.to_owned()),
            ..ProductFilter::default()
        };
        assert!(!ranks_every_match(
            &ProductFilter::default(),
            ProductSort::Created
        ));
        assert!(!ranks_every_match(
            &search(" teapot "),
            ProductSort::Relevance
        ));
        assert!(ranks_every_match(
            &search("blue teapot"),
            ProductSort::Relevance
        ));
        assert!(ranks_every_match(&search("-blue"), ProductSort::Relevance));
        assert!(ranks_every_match(&search("teapot"), ProductSort::PriceAsc));

        // A one-word search with a filter reads the word's entries until a
        // page passes the filter: it takes a turn; a filtered list with no
        // search does not.
        use crate::repo::takes_a_search_turn;
        let filtered = ProductFilter {
            active: Some(false),
            ..search("teapot")
        };
        assert!(!ranks_every_match(&filtered, ProductSort::Relevance));
        assert!(takes_a_search_turn(&filtered, ProductSort::Relevance));
        assert!(!takes_a_search_turn(
            &search("teapot"),
            ProductSort::Relevance
        ));
        // A storefront's filters pass most products: no turn.
        assert!(!takes_a_search_turn(
            &ProductFilter {
                active: Some(true),
                in_stock: Some(true),
                ..search("teapot")
            },
            ProductSort::Relevance
        ));
        assert!(takes_a_search_turn(
            &search("blue teapot"),
            ProductSort::Relevance
        ));
        assert!(!takes_a_search_turn(
            &ProductFilter {
                active: Some(false),
                ..ProductFilter::default()
            },
            ProductSort::Created
        ));
    }

    #[test]
    fn zero_means_one_more_than_the_cpus() {
        let searches = Searches::new(&SearchSettings {
            max_concurrent: 0,
            queue_timeout_ms: 1,
        });
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(searches.turns.available_permits(), cpus + 1);
    }
}
