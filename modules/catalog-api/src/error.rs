//! [`CatalogError`]: the one error type of the catalog contract.

use kernel::{Failure, ProblemBody, ProblemCode};

use crate::ProductId;

/// Everything a catalog call can fail with, in process or over HTTP: the
/// catalog's own refusals, and the failures every module shares.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// No product has this id.
    #[error("product `{0}` does not exist")]
    ProductNotFound(ProductId),
    /// Another product has this SKU.
    #[error("a product with SKU `{0}` already exists")]
    DuplicateSku(String),
    /// Another category has this slug.
    #[error("a category with slug `{0}` already exists")]
    DuplicateSlug(String),
    /// Invalid input, no caller or the wrong one, an outage, a bug.
    #[error("catalog: {0}")]
    Common(#[from] Failure),
}

impl ProblemCode for CatalogError {
    fn status(&self) -> u16 {
        match self {
            CatalogError::ProductNotFound(_) => 404,
            CatalogError::DuplicateSku(_) | CatalogError::DuplicateSlug(_) => 409,
            CatalogError::Common(failure) => failure.status(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            CatalogError::ProductNotFound(_) => "product_not_found",
            CatalogError::DuplicateSku(_) => "duplicate_sku",
            CatalogError::DuplicateSlug(_) => "duplicate_slug",
            CatalogError::Common(failure) => failure.code("catalog_unavailable"),
        }
    }

    fn failure(&self) -> Option<&Failure> {
        match self {
            CatalogError::Common(failure) => Some(failure),
            _ => None,
        }
    }
}

impl CatalogError {
    /// Rebuilds the error a remote catalog answered with.
    ///
    /// `product` and `key` (the SKU or slug sent) are what the request was
    /// about, so the variant carries the same data as the in-process one.
    pub fn from_problem(
        problem: ProblemBody,
        product: Option<ProductId>,
        key: Option<&str>,
    ) -> CatalogError {
        match (problem.code.as_str(), product, key) {
            ("product_not_found", Some(id), _) => CatalogError::ProductNotFound(id),
            ("duplicate_sku", _, Some(sku)) => CatalogError::DuplicateSku(sku.to_uppercase()),
            ("duplicate_slug", _, Some(slug)) => CatalogError::DuplicateSlug(slug.to_owned()),
            _ => CatalogError::Common(Failure::from_problem(problem)),
        }
    }
}
