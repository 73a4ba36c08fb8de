//! The sandbox's in-memory state: payment methods, authorizations with their
//! history, and the answers remembered per idempotency key.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use actix_web::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::AuthorizeRequest;

/// An authorization's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Amount held on the card.
    Authorized,
    /// Amount taken from the card.
    Captured,
    /// Hold released without taking anything.
    Voided,
    /// Amount given back after capture.
    Refunded,
}

/// One authorization and its history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Authorization {
    /// The authorization's id, `auth_<uuid>`.
    pub id: String,
    /// The state it is in now.
    pub status: Status,
    /// Amount held, minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// The card's last four digits (the full number is never kept).
    pub card_last4: String,
    /// Every state this authorization has been in, in order.
    pub history: Vec<Status>,
}

/// A stored answer for an idempotency key: the request it answered, and the
/// answer once there is one.
#[derive(Debug, Clone)]
pub(crate) struct Remembered {
    pub(crate) request: AuthorizeRequest,
    pub(crate) answer: Option<(StatusCode, Value)>,
    /// When the key was claimed.
    pub(crate) claimed: std::time::Instant,
}

/// How many of each (cards, authorizations, idempotency keys) the sandbox
/// keeps: past it, the oldest goes (a key whose request still runs stays,
/// two minutes at most).
/// The state lives in memory, and a shop that runs the sandbox in process
/// must not grow with every checkout it ever made (by estimate, 70 MB at
/// most; not measured).
/// A step on an authorization that was let go (a refund of an order
/// cancelled fifty thousand payments later) is answered 404, which the
/// shop takes as a refusal for an operator to look at. (A real provider
/// keeps its authorizations, and its keys for a day, in its own storage.)
pub const RETAINED: usize = 50_000;

/// The sandbox's state, shared by its workers.
#[derive(Debug)]
pub struct Sandbox {
    /// Card numbers by payment method token.
    pub(crate) payment_methods: Mutex<Retained<String>>,
    /// The authorizations made, by their id.
    pub(crate) authorizations: Mutex<Retained<Authorization>>,
    /// What each idempotency key answered, or that it is still running.
    pub(crate) keys: Mutex<Retained<Remembered>>,
}

impl Default for Sandbox {
    fn default() -> Sandbox {
        Sandbox::retaining(RETAINED)
    }
}

impl Sandbox {
    /// A sandbox that keeps at most `limit` of each.
    #[must_use]
    pub fn retaining(limit: usize) -> Sandbox {
        Sandbox {
            payment_methods: Mutex::new(Retained::new(limit)),
            authorizations: Mutex::new(Retained::new(limit)),
            keys: Mutex::new(Retained::new(limit)),
        }
    }
}

/// Whether a retained value may be let go ([`Retained::insert`]).
pub(crate) trait Settled {
    /// Not while it is still needed as it is (a request still running).
    fn settled(&self) -> bool {
        true
    }
}

impl Settled for String {}
impl Settled for Authorization {}
/// How long a key whose request has no answer yet is kept past the limit:
/// longer than any request runs (the slowest test card answers after 30 s).
/// One whose request was dropped unanswered (its client went away) has no
/// answer for ever, and goes after this.
const RUNNING_AT_MOST: std::time::Duration = std::time::Duration::from_secs(120);

impl Settled for Remembered {
    fn settled(&self) -> bool {
        self.answer.is_some() || self.claimed.elapsed() > RUNNING_AT_MOST
    }
}

/// Values by key, at most `limit` settled ones: inserting one more lets the
/// oldest settled one go.
#[derive(Debug)]
pub(crate) struct Retained<V> {
    values: HashMap<String, V>,
    /// The keys, oldest first.
    order: VecDeque<String>,
    limit: usize,
}

impl<V: Settled> Retained<V> {
    fn new(limit: usize) -> Retained<V> {
        Retained {
            values: HashMap::new(),
            order: VecDeque::new(),
            limit: limit.max(1),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        self.values.get(key)
    }

    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.values.get_mut(key)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.values.values()
    }

    /// Keeps `value` under `key` (a new key is the newest).
    pub(crate) fn insert(&mut self, key: String, value: V) {
        if self.values.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
            // The oldest settled ones go; unsettled ones met on the way go
            // back to the end (few: requests under way).
            let mut looked = 0;
            while self.order.len() > self.limit && looked < self.order.len() {
                let Some(oldest) = self.order.pop_front() else {
                    break;
                };
                if self.values.get(&oldest).is_none_or(Settled::settled) {
                    self.values.remove(&oldest);
                } else {
                    self.order.push_back(oldest);
                    looked += 1;
                }
            }
        }
    }

    /// Forgets `key` (rare: a key whose request failed with a 500).
    pub(crate) fn remove(&mut self, key: &str) {
        if self.values.remove(key).is_some() {
            self.order.retain(|k| k != key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remembered(answer: Option<(StatusCode, Value)>) -> Remembered {
        let request: AuthorizeRequest = serde_json::from_value(serde_json::json!({
            "amount_minor": 100, "currency": "EUR", "card_number": "4242424242424242"
        }))
        .unwrap();
        Remembered {
            request,
            answer,
            claimed: std::time::Instant::now(),
        }
    }

    /// Past the limit the oldest answered key goes; one whose request still
    /// runs stays (let go, its answer would be lost, and a retry with the
    /// key would make a second hold).
    #[test]
    fn a_key_whose_request_still_runs_is_kept_past_the_limit() {
        let answered = || remembered(Some((StatusCode::CREATED, Value::Null)));
        let mut keys = Retained::new(2);
        keys.insert("running".into(), remembered(None));
        keys.insert("first".into(), answered());
        keys.insert("second".into(), answered());
        assert!(keys.get("running").is_some());
        assert!(keys.get("first").is_none());
        assert!(keys.get("second").is_some());
        // Passed over, it went to the back; once answered, it goes in turn.
        if let Some(running) = keys.get_mut("running") {
            running.answer = Some((StatusCode::CREATED, Value::Null));
        }
        keys.insert("third".into(), answered());
        assert!(keys.get("second").is_none());
        assert!(keys.get("running").is_some());
        keys.insert("fourth".into(), answered());
        assert!(keys.get("running").is_none());
        assert!(keys.get("third").is_some() && keys.get("fourth").is_some());
    }
}
