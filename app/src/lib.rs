//! The shop's composition root: configuration, module wiring, the HTTP
//! server and the CLI of the `shop` binary. The only crate that sees module
//! implementation crates.

#[cfg(feature = "user")]
pub mod admin;
pub mod database;
mod dead_letters;
mod gateway;
pub mod memory;
mod messaging;
pub mod openapi;
mod ops;
mod registry;
mod routes;
pub mod settings;
pub mod spec_compat;
pub mod startup;

pub use host::{compose, modules};
pub use settings::Settings;
pub use startup::Application;
