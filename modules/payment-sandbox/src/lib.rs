//! A **sandbox** card payment provider: a real HTTP server that behaves like
//! a card network's API and moves no money. It stands in for the one part
//! of the world the shop cannot reach here; the payment module talks to it
//! over HTTP through its provider adapter, so a real provider plugs in at
//! the same seam.
//!
//! The API, modelled on Stripe's (amounts in minor units):
//!
//! - `POST /v1/payment_methods` with `{"card_number"}`: keeps the card and
//!   answers `{"id": "pm_...", "card_last4"}`, a token the shop stores in
//!   place of the number (so a resumed checkout can still authorize).
//! - `POST /v1/authorizations` with an `Idempotency-Key` header (required)
//!   and `{"amount_minor", "currency"}` plus `"payment_method"` (a token)
//!   or `"card_number"`: holds the amount.
//!   201 with the authorization, or 402 with `{"error": {"code"}}`.
//! - `POST /v1/authorizations/{id}/capture`, `/void`, `/refund`: move it
//!   through `authorized → captured → refunded` or `authorized → voided`.
//!   Repeating the step just done answers the same (idempotent); any other
//!   move is 409 `invalid_state`.
//! - `GET /v1/authorizations/{id}`: the authorization and every step applied
//!   to it; `GET /v1/authorizations`: all of them (tests count captures here).
//!
//! Idempotency keys behave as Stripe's: the first answer is stored and
//! replayed for the same key and body; the same key with another body is
//! 422 `idempotency_key_reused`; the same key while the first request is
//! still running is 409 `idempotency_key_in_use`; a request dropped before
//! it answers (its client gone) frees its key.
//!
//! Test cards ([`cards`]): one succeeds, one is declined, one lacks funds,
//! one never answers in time, one fails with 500s. Any other number is 402
//! `incorrect_number`. State lives in memory: the sandbox is a test double
//! of a network, not a store. It keeps the last [`RETAINED`] cards,
//! authorizations and idempotency keys of each, so that a shop running it
//! in process does not grow with every checkout.

pub mod cards;
mod http;
mod state;

use std::time::Duration;

pub use http::{configure, server};
pub use state::{Authorization, RETAINED, Sandbox, Status};

/// How long the [`cards::TIMES_OUT`] card keeps a request waiting.
pub const SLOW_ANSWER: Duration = Duration::from_secs(30);
