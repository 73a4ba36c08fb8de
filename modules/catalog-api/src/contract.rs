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

use crate::{
    Availability, CatalogApi, CatalogError, ListProducts, NewCategory, NewProduct, ProductFilter,
    ProductId, ProductPatch, ProductSort,
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

/// Creating returns the product with server-set fields; reading returns the same.
pub async fn create_then_get_roundtrips(h: &Harness) {
    let created = h
        .api
        .create_product(&h.admin, new_product("mug-1"))
        .await
        .unwrap();
    assert_eq!(created.sku.as_str(), "MUG-1", "SKUs are stored upper-case");
    assert_eq!(created.name, "Product mug-1");
    assert_eq!(created.price, Money::new(1299, Currency::EUR));
    assert!(created.active, "products are active unless told otherwise");
    assert_eq!(created.created_at, created.updated_at);

    let fetched = h.api.get_product(&h.admin, created.id).await.unwrap();
    assert_eq!(fetched, created);
}

/// An unknown id is `ProductNotFound` carrying that id.
pub async fn get_unknown_product_is_not_found(h: &Harness) {
    let id = ProductId::generate();
    let err = h.api.get_product(&h.admin, id).await.unwrap_err();
    assert_eq!(err, CatalogError::ProductNotFound(id));
}

/// A second product with the same SKU, in any case, is `DuplicateSku`.
pub async fn duplicate_sku_is_rejected(h: &Harness) {
    h.api
        .create_product(&h.admin, new_product("DUP-1"))
        .await
        .unwrap();
    let err = h
        .api
        .create_product(&h.admin, new_product("dup-1"))
        .await
        .unwrap_err();
    assert_eq!(err, CatalogError::DuplicateSku("DUP-1".to_owned()));
}

/// Every invalid field is reported at once, by JSON path.
pub async fn invalid_product_lists_every_bad_field(h: &Harness) {
    let bad = NewProduct {
        sku: "-bad sku".to_owned(),
        name: "   ".to_owned(),
        description: Some("x".repeat(5001)),
        price: Money::new(-1, Currency::EUR),
        active: None,
        category_id: None,
        images: vec![
            "ftp://example.com/a.png".to_owned(),
            "http://127.0.0.1/a.png".to_owned(),
        ],
        attributes: serde_json::Map::new(),
    };
    let err = h.api.create_product(&h.admin, bad).await.unwrap_err();
    let CatalogError::Validation(errors) = err else {
        panic!("expected Validation, got {err:?}");
    };
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "sku",
            "name",
            "description",
            "price.amount_minor",
            "images[0]",
            "images[1]"
        ],
        "{errors:?}"
    );
}

/// Pages follow each other without gaps or repeats, oldest first, and the
/// last page has no next cursor.
pub async fn list_paginates_in_creation_order(h: &Harness) {
    let mut created = Vec::new();
    for i in 0..5 {
        let p = h
            .api
            .create_product(&h.admin, new_product(&format!("PAGE-{i}")))
            .await
            .unwrap();
        created.push(p.id);
    }
    let limit = PageLimit::new(2).unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = h
            .api
            .list_products(
                &h.admin,
                ListProducts {
                    limit,
                    cursor,
                    ..ListProducts::default()
                },
            )
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
pub async fn foreign_cursor_is_rejected(h: &Harness) {
    let query = ListProducts {
        cursor: Some(Cursor::from_raw("definitely-not-a-cursor")),
        ..ListProducts::default()
    };
    let err = h.api.list_products(&h.admin, query).await.unwrap_err();
    assert_eq!(err, CatalogError::InvalidCursor);
}

/// A patch changes only the fields it names; `description: null` clears it.
pub async fn update_changes_only_given_fields(h: &Harness) {
    let created = h
        .api
        .create_product(&h.admin, new_product("UPD-1"))
        .await
        .unwrap();
    let patch = ProductPatch {
        price: Some(Money::new(999, Currency::EUR)),
        description: Some(None),
        ..ProductPatch::default()
    };
    let updated = h
        .api
        .update_product(&h.admin, created.id, patch)
        .await
        .unwrap();
    assert_eq!(updated.price, Money::new(999, Currency::EUR));
    assert_eq!(updated.description, None);
    assert_eq!(updated.name, created.name);
    assert_eq!(updated.sku, created.sku);
    assert!(updated.updated_at > created.updated_at);
    assert_eq!(
        h.api.get_product(&h.admin, created.id).await.unwrap(),
        updated
    );
}

/// Updating an unknown product is `ProductNotFound`; an invalid patch is `Validation`.
pub async fn update_rejects_unknown_and_invalid(h: &Harness) {
    let id = ProductId::generate();
    let err = h
        .api
        .update_product(&h.admin, id, ProductPatch::default())
        .await
        .unwrap_err();
    assert_eq!(err, CatalogError::ProductNotFound(id));

    let created = h
        .api
        .create_product(&h.admin, new_product("UPD-2"))
        .await
        .unwrap();
    let patch = ProductPatch {
        name: Some(String::new()),
        ..ProductPatch::default()
    };
    let err = h
        .api
        .update_product(&h.admin, created.id, patch)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CatalogError::Validation(errors) if errors[0].field == "name"),
        "{err:?}"
    );
}

/// Writes need an admin; reads need nobody.
pub async fn writes_need_an_admin(h: &Harness) {
    let anonymous = CallContext::background();
    let err = h
        .api
        .create_product(&anonymous, new_product("AUTH-1"))
        .await
        .unwrap_err();
    assert_eq!(err, CatalogError::Unauthenticated);
    let err = h
        .api
        .create_product(&h.customer, new_product("AUTH-1"))
        .await
        .unwrap_err();
    assert_eq!(err, CatalogError::Forbidden);
    let created = h
        .api
        .create_product(&h.admin, new_product("AUTH-1"))
        .await
        .unwrap();
    let err = h
        .api
        .update_product(&h.customer, created.id, ProductPatch::default())
        .await
        .unwrap_err();
    assert_eq!(err, CatalogError::Forbidden);
    assert_eq!(
        h.api.get_product(&anonymous, created.id).await.unwrap(),
        created
    );
}

/// Categories nest one level; slugs are unique; products filter by category
/// (a parent includes its children).
pub async fn categories_nest_one_level(h: &Harness) {
    let new = |name: &str, slug: &str, parent| NewCategory {
        name: name.to_owned(),
        slug: slug.to_owned(),
        parent_id: parent,
    };
    let kitchen = h
        .api
        .create_category(&h.admin, new("Kitchen", "kitchen", None))
        .await
        .unwrap();
    let mugs = h
        .api
        .create_category(&h.admin, new("Mugs", "mugs", Some(kitchen.id)))
        .await
        .unwrap();
    assert_eq!(mugs.parent_id, Some(kitchen.id));
    let too_deep = h
        .api
        .create_category(&h.admin, new("Big mugs", "big-mugs", Some(mugs.id)))
        .await
        .unwrap_err();
    assert!(
        matches!(&too_deep, CatalogError::Validation(e) if e[0].field == "parent_id"),
        "{too_deep:?}"
    );
    assert_eq!(
        h.api
            .create_category(&h.admin, new("Again", "mugs", None))
            .await
            .unwrap_err(),
        CatalogError::DuplicateSlug("mugs".to_owned())
    );
    assert_eq!(
        h.api
            .create_category(&h.customer, new("Mine", "mine", None))
            .await
            .unwrap_err(),
        CatalogError::Forbidden
    );
    let tree = h
        .api
        .list_categories(&CallContext::background())
        .await
        .unwrap();
    assert_eq!(tree.len(), 1);
    assert_eq!(tree[0].children, vec![mugs.clone()]);

    let mut in_mugs = new_product("CAT-1");
    in_mugs.category_id = Some(mugs.id);
    h.api.create_product(&h.admin, in_mugs).await.unwrap();
    h.api
        .create_product(&h.admin, new_product("CAT-2"))
        .await
        .unwrap();
    let mut orphan = new_product("CAT-3");
    orphan.category_id = Some(crate::CategoryId::generate());
    assert!(matches!(
        h.api.create_product(&h.admin, orphan).await.unwrap_err(),
        CatalogError::Validation(e) if e[0].field == "category_id"
    ));
    for category in [kitchen.id, mugs.id] {
        let query = ListProducts {
            filter: ProductFilter {
                category_id: Some(category),
                ..ProductFilter::default()
            },
            ..ListProducts::default()
        };
        let page = h.api.list_products(&h.admin, query).await.unwrap();
        let skus: Vec<_> = page.items.iter().map(|p| p.sku.as_str()).collect();
        assert_eq!(skus, ["CAT-1"], "category {category}");
    }
}

/// Every sort pages through every product exactly once, in its order, and
/// filters and search narrow the list.
pub async fn listing_filters_searches_and_sorts(h: &Harness) {
    let products = [
        ("S-1", "Blue stoneware mug", 1500, true),
        ("S-2", "Green tea cup", 900, true),
        ("S-3", "Red enamel mug", 1200, false),
        ("S-4", "Teapot", 3000, true),
        ("S-5", "Mug rack", 2500, true),
    ];
    for (sku, name, price, active) in products {
        let mut p = new_product(sku);
        p.name = name.to_owned();
        p.price = Money::new(price, Currency::EUR);
        p.active = Some(active);
        let created = h.api.create_product(&h.admin, p).await.unwrap();
        assert_eq!(created.availability, Availability::Unknown);
    }
    let list = |filter: ProductFilter, sort: Option<ProductSort>| {
        let api = h.api.clone();
        let cx = h.admin.clone();
        async move {
            let mut skus = Vec::new();
            let mut cursor = None;
            loop {
                let query = ListProducts {
                    limit: PageLimit::new(2).unwrap(),
                    cursor,
                    filter: filter.clone(),
                    sort,
                };
                let page = api.list_products(&cx, query).await.unwrap();
                skus.extend(page.items.iter().map(|p| p.sku.to_string()));
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break skus,
                }
            }
        }
    };
    let all = ProductFilter::default();
    assert_eq!(
        list(all.clone(), Some(ProductSort::PriceAsc)).await,
        ["S-2", "S-3", "S-1", "S-5", "S-4"]
    );
    assert_eq!(
        list(all.clone(), Some(ProductSort::PriceDesc)).await,
        ["S-4", "S-5", "S-1", "S-3", "S-2"]
    );
    assert_eq!(
        list(all.clone(), Some(ProductSort::Name)).await,
        ["S-1", "S-2", "S-5", "S-3", "S-4"]
    );
    assert_eq!(
        list(all.clone(), Some(ProductSort::Newest)).await,
        ["S-5", "S-4", "S-3", "S-2", "S-1"]
    );
    assert_eq!(
        list(all.clone(), None).await,
        ["S-1", "S-2", "S-3", "S-4", "S-5"]
    );

    let priced = ProductFilter {
        min_price: Some(1000),
        max_price: Some(2500),
        ..ProductFilter::default()
    };
    assert_eq!(
        list(priced, Some(ProductSort::PriceAsc)).await,
        ["S-3", "S-1", "S-5"]
    );
    let active = ProductFilter {
        active: Some(false),
        ..ProductFilter::default()
    };
    assert_eq!(list(active, None).await, ["S-3"]);
    let never_stocked = ProductFilter {
        in_stock: Some(true),
        ..ProductFilter::default()
    };
    assert!(list(never_stocked, None).await.is_empty());

    // Search: stemmed words, ranked; `mugs` finds every mug.
    let search = |q: &str| ProductFilter {
        q: Some(q.to_owned()),
        ..ProductFilter::default()
    };
    let mut found = list(search("mugs"), None).await;
    found.sort();
    assert_eq!(found, ["S-1", "S-3", "S-5"]);
    assert_eq!(list(search("tea -pot"), None).await, ["S-2"]);
    assert_eq!(list(search("S-4"), None).await, ["S-4"]);

    let bad = ProductFilter {
        min_price: Some(10),
        max_price: Some(5),
        ..ProductFilter::default()
    };
    let query = ListProducts {
        filter: bad,
        ..ListProducts::default()
    };
    assert!(matches!(
        h.api.list_products(&h.admin, query).await.unwrap_err(),
        CatalogError::Validation(_)
    ));
    let query = ListProducts {
        sort: Some(ProductSort::Relevance),
        ..ListProducts::default()
    };
    assert!(matches!(
        h.api.list_products(&h.admin, query).await.unwrap_err(),
        CatalogError::Validation(_)
    ));
    // A cursor is only good for the sort that made it.
    let page = h
        .api
        .list_products(
            &h.admin,
            ListProducts {
                limit: PageLimit::new(1).unwrap(),
                sort: Some(ProductSort::Name),
                ..ListProducts::default()
            },
        )
        .await
        .unwrap();
    let other = ListProducts {
        cursor: page.next_cursor,
        sort: Some(ProductSort::PriceAsc),
        ..ListProducts::default()
    };
    assert_eq!(
        h.api.list_products(&h.admin, other).await.unwrap_err(),
        CatalogError::InvalidCursor
    );
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
