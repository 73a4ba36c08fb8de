//! Catalog module: products, their persistence, the in-process
//! implementation of [`catalog_api::CatalogApi`] and the `/products` routes.
//!
//! Owns the `catalog` schema; nothing else reads or writes it. Other modules
//! reach the catalog only through `catalog-api`.

pub mod cache;
mod changes;
mod domain;
pub mod events;
pub mod http;
mod registration;
mod repo;
pub mod searches;
mod service;

pub use cache::{CachedProduct, ProductCache};
pub use events::CatalogEvents;
pub use registration::REGISTRATION;
pub use searches::Searches;
pub use service::CatalogModule;

use serde::Deserialize;

/// Name of the module, of its schema and of its config section.
pub const NAME: &str = "catalog";

db::module_migrations!(NAME, "../../migrations/catalog");

/// The `[catalog]` config section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Database of this module (`[catalog.database]`).
    pub database: db::ModuleDatabase,
    /// Product cache (`[catalog.cache]`).
    pub cache: cache::CacheSettings,
    /// The bulkhead of searches that rank every match (`[catalog.search]`).
    pub search: searches::SearchSettings,
}
