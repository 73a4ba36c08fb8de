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

use kernel::{CallContext, Currency, Cursor, Money, PageLimit};

use crate::{CatalogApi, CatalogError, ListProducts, NewProduct, ProductId, ProductPatch};

fn cx() -> CallContext {
    CallContext::background()
}

/// A valid new product with the given SKU.
pub fn new_product(sku: &str) -> NewProduct {
    NewProduct {
        sku: sku.to_owned(),
        name: format!("Product {sku}"),
        description: Some("A fine thing".to_owned()),
        price: Money::new(1299, Currency::EUR),
        active: None,
    }
}

/// Creating returns the product with server-set fields; reading returns the same.
pub async fn create_then_get_roundtrips(api: &dyn CatalogApi) {
    let created = api
        .create_product(&cx(), new_product("mug-1"))
        .await
        .unwrap();
    assert_eq!(created.sku.as_str(), "MUG-1", "SKUs are stored upper-case");
    assert_eq!(created.name, "Product mug-1");
    assert_eq!(created.price, Money::new(1299, Currency::EUR));
    assert!(created.active, "products are active unless told otherwise");
    assert_eq!(created.created_at, created.updated_at);

    let fetched = api.get_product(&cx(), created.id).await.unwrap();
    assert_eq!(fetched, created);
}

/// An unknown id is `ProductNotFound` carrying that id.
pub async fn get_unknown_product_is_not_found(api: &dyn CatalogApi) {
    let id = ProductId::generate();
    let err = api.get_product(&cx(), id).await.unwrap_err();
    assert_eq!(err, CatalogError::ProductNotFound(id));
}

/// A second product with the same SKU, in any case, is `DuplicateSku`.
pub async fn duplicate_sku_is_rejected(api: &dyn CatalogApi) {
    api.create_product(&cx(), new_product("DUP-1"))
        .await
        .unwrap();
    let err = api
        .create_product(&cx(), new_product("dup-1"))
        .await
        .unwrap_err();
    assert_eq!(err, CatalogError::DuplicateSku("DUP-1".to_owned()));
}

/// Every invalid field is reported at once, by JSON path.
pub async fn invalid_product_lists_every_bad_field(api: &dyn CatalogApi) {
    let bad = NewProduct {
        sku: "-bad sku".to_owned(),
        name: "   ".to_owned(),
        description: Some("x".repeat(5001)),
        price: Money::new(-1, Currency::EUR),
        active: None,
    };
    let err = api.create_product(&cx(), bad).await.unwrap_err();
    let CatalogError::Validation(errors) = err else {
        panic!("expected Validation, got {err:?}");
    };
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["sku", "name", "description", "price.amount_minor"],
        "{errors:?}"
    );
}

/// Pages follow each other without gaps or repeats, oldest first, and the
/// last page has no next cursor.
pub async fn list_paginates_in_creation_order(api: &dyn CatalogApi) {
    let mut created = Vec::new();
    for i in 0..5 {
        let p = api
            .create_product(&cx(), new_product(&format!("PAGE-{i}")))
            .await
            .unwrap();
        created.push(p.id);
    }
    let limit = PageLimit::new(2).unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = api
            .list_products(&cx(), ListProducts { limit, cursor })
            .await
            .unwrap();
        pages += 1;
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|p| p.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(seen, created);
    assert_eq!(pages, 3);
}

/// A cursor the list did not hand out is `InvalidCursor`.
pub async fn foreign_cursor_is_rejected(api: &dyn CatalogApi) {
    let query = ListProducts {
        limit: PageLimit::DEFAULT,
        cursor: Some(Cursor::from_raw("definitely-not-a-cursor")),
    };
    let err = api.list_products(&cx(), query).await.unwrap_err();
    assert_eq!(err, CatalogError::InvalidCursor);
}

/// A patch changes only the fields it names; `description: null` clears it.
pub async fn update_changes_only_given_fields(api: &dyn CatalogApi) {
    let created = api
        .create_product(&cx(), new_product("UPD-1"))
        .await
        .unwrap();
    let patch = ProductPatch {
        price: Some(Money::new(999, Currency::EUR)),
        description: Some(None),
        ..ProductPatch::default()
    };
    let updated = api.update_product(&cx(), created.id, patch).await.unwrap();
    assert_eq!(updated.price, Money::new(999, Currency::EUR));
    assert_eq!(updated.description, None);
    assert_eq!(updated.name, created.name);
    assert_eq!(updated.sku, created.sku);
    assert!(updated.updated_at > created.updated_at);
    assert_eq!(api.get_product(&cx(), created.id).await.unwrap(), updated);
}

/// Updating an unknown product is `ProductNotFound`; an invalid patch is `Validation`.
pub async fn update_rejects_unknown_and_invalid(api: &dyn CatalogApi) {
    let id = ProductId::generate();
    let err = api
        .update_product(&cx(), id, ProductPatch::default())
        .await
        .unwrap_err();
    assert_eq!(err, CatalogError::ProductNotFound(id));

    let created = api
        .create_product(&cx(), new_product("UPD-2"))
        .await
        .unwrap();
    let patch = ProductPatch {
        name: Some(String::new()),
        ..ProductPatch::default()
    };
    let err = api
        .update_product(&cx(), created.id, patch)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CatalogError::Validation(errors) if errors[0].field == "name"),
        "{err:?}"
    );
}

/// Generates one `#[tokio::test]` per contract case for a setup function.
///
/// `$setup` is an async fn returning `(Arc<dyn CatalogApi>, guard)`; the
/// guard keeps the test's database and servers alive until the case ends.
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
        );
    };
    (@cases $setup:path, $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (api, _guard) = $setup().await;
                $crate::contract::$case(&*api).await;
            }
        )*
    };
}
