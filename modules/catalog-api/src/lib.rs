//! Public contract of the catalog module. Other modules depend on this crate only.
//!
//! [`CatalogApi`] has two implementations: `catalog::CatalogModule` (in
//! process) and [`client::CatalogClient`] (over HTTP, feature `client`). The
//! composition root picks one from configuration; callers cannot tell them
//! apart, which the contract suite in [`contract`] checks.

mod category;
mod error;
pub mod events;
pub mod observed;
mod product;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "contract-tests")]
pub mod contract;

pub use category::{Category, CategoryId, NewCategory};
pub use error::CatalogError;
pub use product::{
    Availability, ImageUrl, ListProducts, NewProduct, Product, ProductFilter, ProductId,
    ProductPatch, ProductSort, Sku, SkuError,
};

use kernel::{CallContext, Page};

/// A product, and whether it is the last known version rather than a fresh
/// answer ([`CatalogApi::get_product_or_last_known`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The product.
    pub product: Product,
    /// `true`: the catalog could not answer; this is what it said last time.
    pub stale: bool,
}

/// Route prefixes (below `/api/v1`) served by the catalog module. A process
/// where the catalog is remote forwards these to it.
pub const ROUTE_PREFIXES: &[&str] = &["/products", "/categories"];

/// Event types the catalog subscribes to: stock changes (availability) and
/// its own product changes (cache invalidation). A publisher declares the
/// catalog's queue, so none is lost while the catalog's process is down.
pub const SUBSCRIBES: &[&str] = &[
    "inventory.stock_changed.v1",
    "catalog.product_updated.v1",
    "catalog.product_price_changed.v1",
];

/// What other modules (and the catalog's own HTTP routes) may ask of the catalog.
#[async_trait::async_trait]
pub trait CatalogApi: Send + Sync {
    /// Creates a product. Admins only.
    ///
    /// # Errors
    /// [`Failure::Unauthenticated`](kernel::Failure::Unauthenticated) / [`Failure::Forbidden`](kernel::Failure::Forbidden) for
    /// other callers, [`Failure::Validation`](kernel::Failure::Validation) for invalid fields,
    /// [`CatalogError::DuplicateSku`] when the SKU is taken.
    async fn create_product(
        &self,
        cx: &CallContext,
        new: NewProduct,
    ) -> Result<Product, CatalogError>;

    /// One product by id.
    ///
    /// # Errors
    /// [`CatalogError::ProductNotFound`] when no product has this id.
    async fn get_product(&self, cx: &CallContext, id: ProductId) -> Result<Product, CatalogError>;

    /// [`Self::get_product`] with its fallback: when the catalog cannot
    /// answer (unreachable, circuit open, overloaded, out of time), the last
    /// version this implementation saw, marked stale. The module in process
    /// has nothing older than its own answer; the HTTP client remembers what
    /// it read. For reads that may be a little old (a cart's check), never
    /// for a price the customer pays.
    ///
    /// # Errors
    /// As [`Self::get_product`], and its unavailability when no version is
    /// known.
    async fn get_product_or_last_known(
        &self,
        cx: &CallContext,
        id: ProductId,
    ) -> Result<Fetched, CatalogError>;

    /// A page of products: filtered, searched and sorted as asked, in a
    /// stable order: pages neither repeat nor skip products added
    /// meanwhile. Sorted by a value that can change (price, name,
    /// relevance), a product whose value changed between two pages may be
    /// on both or on neither.
    ///
    /// # Errors
    /// [`Failure::InvalidCursor`](kernel::Failure::InvalidCursor) when the cursor was not handed out by
    /// this list (with this sort); [`Failure::Validation`](kernel::Failure::Validation) for an
    /// impossible filter.
    async fn list_products(
        &self,
        cx: &CallContext,
        query: ListProducts,
    ) -> Result<Page<Product>, CatalogError>;

    /// Changes the fields present in `patch` (JSON merge-patch semantics).
    /// Admins only.
    ///
    /// # Errors
    /// [`Failure::Unauthenticated`](kernel::Failure::Unauthenticated), [`Failure::Forbidden`](kernel::Failure::Forbidden),
    /// [`CatalogError::ProductNotFound`], [`Failure::Validation`](kernel::Failure::Validation).
    async fn update_product(
        &self,
        cx: &CallContext,
        id: ProductId,
        patch: ProductPatch,
    ) -> Result<Product, CatalogError>;

    /// Creates a category. Admins only.
    ///
    /// # Errors
    /// [`CatalogError::DuplicateSlug`], [`Failure::Validation`](kernel::Failure::Validation) (a
    /// parent that is itself a subcategory, or does not exist).
    async fn create_category(
        &self,
        cx: &CallContext,
        new: NewCategory,
    ) -> Result<Category, CatalogError>;

    /// Every category, as a tree (top-level ones with their children), by name.
    ///
    /// # Errors
    /// [`Failure::Unavailable`](kernel::Failure::Unavailable).
    async fn list_categories(&self, cx: &CallContext) -> Result<Vec<Category>, CatalogError>;
}
