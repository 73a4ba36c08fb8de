//! Integration tests of the shop: one binary, one file per area.

// Tests: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod architecture;
mod auth;
mod catalog_availability;
mod catalog_contract;
mod catalog_http;
mod catalog_read;
mod checkout;
mod checkout_idempotency;
mod cli;
mod crash;
mod database;
mod database_faults;
mod dead_letters;
mod embedded_db;
mod errors;
mod event_batches;
mod events;
mod helpers;
mod inventory;
mod journey;
mod notifications;
mod ops;
mod orders;
mod payment_contract;
mod payment_provider;
mod rate_limits;
mod resilience;
mod rolling;
mod saga_crash;
mod saga_extracted;
mod saga_recovery;
mod sealed_events;
mod tls;
mod topology;
mod topology_contracts;
mod traces;
mod user_contract;
mod users;
mod users_admin;
mod webhooks;
