//! User module: accounts, passwords, access and refresh tokens, roles.
//!
//! Owns the `users` schema (`user` is reserved in PostgreSQL). Signs access
//! tokens with the shop's private key; every other module verifies them
//! with the public keys alone (`auth` crate, `/.well-known/jwks.json`).

mod domain;
mod error;
pub mod http;
mod password;
mod registration;
mod repo;
mod service;
mod tokens;
mod worker;

pub use error::AuthFlowError;
pub use password::{HashingSettings, PasswordHasher};
pub use registration::{REGISTRATION, module};
pub use service::{AdminChanges, ProfileChanges, UserModule};
pub use tokens::TokenPair;
pub use worker::RetentionJob;

use serde::Deserialize;

/// Name of the module and of its config section.
pub const NAME: &str = "user";
/// The module's PostgreSQL schema.
pub const SCHEMA: &str = "users";

db::module_migrations!(SCHEMA, "../../migrations/user");

/// The `[user]` config section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Database of this module (`[user.database]`).
    pub database: db::ModuleDatabase,
    /// Argon2id cost (`[user.password_hashing]`).
    pub password_hashing: HashingSettings,
    /// Lifetime of a refresh token, days.
    pub refresh_token_ttl_days: u64,
    /// The longest a session lasts from its sign-in, days, however often
    /// its refresh token is rotated: then its holder signs in again. It
    /// bounds how long a stolen session that keeps rotating survives, and
    /// lets a session's spent tokens be kept for its whole life (a replay
    /// of any of them revokes it).
    #[serde(default = "default_session_max_days")]
    pub session_max_days: u64,
    /// How often refresh tokens expired for more than a day are pruned,
    /// seconds ([`RetentionJob`]).
    pub prune_interval_secs: u64,
}

fn default_session_max_days() -> u64 {
    30
}
