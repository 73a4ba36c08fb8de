//! The contract suite: what every [`CatalogApi`] implementation must do.
//!
//! Written once, run against the in-process module and against the HTTP
//! client talking to a real server (see `app/tests/api/catalog_contract.rs`).
//! Each function is one test case; [`catalog_contract_suite!`] turns them
//! into `#[tokio::test]`s for a given setup function.
//!
//! [`catalog_contract_suite!`]: crate::catalog_contract_suite

// Test code: panicking on a broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kernel::{CallContext, Currency, Money};

use crate::{CatalogApi, NewProduct};

mod categories;
mod listing;
mod products;

pub use categories::categories_nest_one_level;
pub use listing::{
    foreign_cursor_is_rejected, list_paginates_in_creation_order,
    listing_filters_searches_and_sorts,
};
pub use products::{
    create_then_get_roundtrips, duplicate_sku_is_rejected, get_unknown_product_is_not_found,
    invalid_product_lists_every_bad_field, update_changes_only_given_fields,
    update_rejects_unknown_and_invalid, writes_need_an_admin,
};

/// What a contract case runs against: the implementation and call contexts
/// for an admin and for a customer (a token over HTTP, a caller in process).
pub struct Harness {
    /// The implementation under test.
    pub api: std::sync::Arc<dyn CatalogApi>,
    /// An admin's context.
    pub admin: CallContext,
    /// A customer's context.
    pub customer: CallContext,
}

/// A valid new product with the given SKU.
pub fn new_product(sku: &str) -> NewProduct {
    NewProduct {
        sku: sku.to_owned(),
        name: format!("Product {sku}"),
        description: Some("A fine thing".to_owned()),
        price: Money::new(1299, Currency::EUR),
        active: None,
        category_id: None,
        images: Vec::new(),
        attributes: serde_json::Map::new(),
    }
}

/// Generates one `#[tokio::test]` per contract case for a setup function.
///
/// `$setup` is an async fn returning `(Harness, guard)`; the guard keeps
/// the test's database and servers alive until the case ends.
#[macro_export]
macro_rules! catalog_contract_suite {
    ($setup:path) => {
        $crate::catalog_contract_suite!(@cases $setup,
            create_then_get_roundtrips,
            get_unknown_product_is_not_found,
            duplicate_sku_is_rejected,
            invalid_product_lists_every_bad_field,
            list_paginates_in_creation_order,
            foreign_cursor_is_rejected,
            update_changes_only_given_fields,
            update_rejects_unknown_and_invalid,
            writes_need_an_admin,
            categories_nest_one_level,
            listing_filters_searches_and_sorts,
        );
    };
    (@cases $setup:path, $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (harness, _guard) = $setup().await;
                $crate::contract::$case(&harness).await;
            }
        )*
    };
}
