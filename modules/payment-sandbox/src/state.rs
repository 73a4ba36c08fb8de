//! The sandbox's in-memory state: payment methods, authorizations with their
//! history, and the answers remembered per idempotency key.

use std::collections::HashMap;
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
}

/// The sandbox's state, shared by its workers.
#[derive(Debug, Default)]
pub struct Sandbox {
    /// Card numbers by payment method token.
    pub(crate) payment_methods: Mutex<HashMap<String, String>>,
    /// Every authorization made, by its id.
    pub(crate) authorizations: Mutex<HashMap<String, Authorization>>,
    /// What each idempotency key answered, or that it is still running.
    pub(crate) keys: Mutex<HashMap<String, Remembered>>,
}
