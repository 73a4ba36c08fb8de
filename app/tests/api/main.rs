//! Integration tests of the shop: one binary, one file per area.

// Tests: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod architecture;
mod auth;
mod catalog_contract;
mod catalog_http;
mod catalog_read;
mod checkout;
mod cli;
mod crash;
mod database;
mod embedded_db;
mod errors;
mod events;
mod helpers;
mod inventory;
mod journey;
mod ops;
mod payment_contract;
mod payment_provider;
mod resilience;
mod rolling;
mod saga_crash;
mod saga_extracted;
mod sealed_events;
mod tls;
mod topology;
mod traces;
mod user_contract;
mod users;
