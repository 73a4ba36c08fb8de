//! [`CatalogError`]: the one error type of the catalog contract.

use kernel::{Degradation, FieldError, ModuleError, ProblemBody, ProblemCode};

use crate::ProductId;

/// Everything a catalog call can fail with, in process or over HTTP.
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
    /// The request is well-formed but some fields are invalid.
    #[error("the product is invalid: {}", summary(.0))]
    Validation(Vec<FieldError>),
    /// The cursor was not handed out by this list.
    #[error("the cursor is not valid for this list")]
    InvalidCursor,
    /// Writing to the catalog needs a signed-in caller.
    #[error("this needs a signed-in admin")]
    Unauthenticated,
    /// Writing to the catalog is for admins.
    #[error("this is for admins")]
    Forbidden,
    /// The catalog (its database, or the remote process) cannot answer now.
    #[error("the catalog is unavailable: {0}")]
    Unavailable(String),
    /// A call to the module in another process was cut short (circuit
    /// open, too many in flight, out of time); no answer was had.
    #[error("{0}")]
    Degraded(Degradation),
    /// A bug or an unexpected answer; details are in the logs.
    #[error("unexpected catalog error: {0}")]
    Unexpected(String),
}

fn summary(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ModuleError for CatalogError {
    fn unavailable(reason: String) -> CatalogError {
        CatalogError::Unavailable(reason)
    }

    fn unexpected(detail: String) -> CatalogError {
        CatalogError::Unexpected(detail)
    }
}

impl ProblemCode for CatalogError {
    fn status(&self) -> u16 {
        match self {
            CatalogError::ProductNotFound(_) => 404,
            CatalogError::DuplicateSku(_) | CatalogError::DuplicateSlug(_) => 409,
            CatalogError::Validation(_) => 422,
            CatalogError::InvalidCursor => 400,
            CatalogError::Unauthenticated => 401,
            CatalogError::Forbidden => 403,
            CatalogError::Unavailable(_) => 503,
            CatalogError::Degraded(_) => 503,
            CatalogError::Unexpected(_) => 500,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            CatalogError::ProductNotFound(_) => "product_not_found",
            CatalogError::DuplicateSku(_) => "duplicate_sku",
            CatalogError::DuplicateSlug(_) => "duplicate_slug",
            CatalogError::Validation(_) => "validation_failed",
            CatalogError::InvalidCursor => "invalid_cursor",
            CatalogError::Unauthenticated => "unauthenticated",
            CatalogError::Forbidden => "forbidden",
            CatalogError::Unavailable(_) => "catalog_unavailable",
            CatalogError::Degraded(d) => d.code(),
            CatalogError::Unexpected(_) => "internal_error",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            CatalogError::Degraded(d) => Some(d.retry_after()),
            _ => None,
        }
    }

    fn field_errors(&self) -> Vec<FieldError> {
        match self {
            CatalogError::Validation(errors) => errors.clone(),
            _ => Vec::new(),
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
        let detail = problem.detail.unwrap_or(problem.title);
        if let Some(degradation) = Degradation::from_code(&problem.code, 1) {
            return CatalogError::Degraded(degradation);
        }
        match (problem.code.as_str(), product, key) {
            ("product_not_found", Some(id), _) => CatalogError::ProductNotFound(id),
            ("duplicate_sku", _, Some(sku)) => CatalogError::DuplicateSku(sku.to_uppercase()),
            ("duplicate_slug", _, Some(slug)) => CatalogError::DuplicateSlug(slug.to_owned()),
            ("validation_failed", _, _) => CatalogError::Validation(problem.errors),
            ("invalid_cursor", _, _) => CatalogError::InvalidCursor,
            ("unauthenticated" | "invalid_token", _, _) => CatalogError::Unauthenticated,
            ("forbidden", _, _) => CatalogError::Forbidden,
            (_, _, _) if problem.status == 503 => CatalogError::Unavailable(detail),
            (code, _, _) => {
                CatalogError::Unexpected(format!("{} {code}: {detail}", problem.status))
            }
        }
    }
}
