//! What a module and the process hosting it agree on.
//!
//! The `shop` binary hosts modules; each module crate exports one
//! [`Registration`] (its schema, routes, settings section, gauges, and how
//! it is built), and the composition root (`app`) loops over the ones
//! compiled in. This crate holds what both sides need for that:
//! [`Settings`] with each module's section typed by the module itself,
//! [`ModuleName`] and where each module runs ([`modules`]), the remote
//! dependencies and their resilience policies ([`compose`]), and the
//! registration and build context ([`registry`]).
//!
//! It sees the modules' `-api` crates (names, routes, events, clients),
//! never their implementation crates.

pub mod compose;
pub mod modules;
pub mod registry;
pub mod settings;

pub use modules::ModuleName;
pub use registry::{Context, Local, Registration, Section};
pub use settings::Settings;
