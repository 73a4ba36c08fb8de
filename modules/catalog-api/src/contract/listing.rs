//! Contract cases for listing products: cursor pagination, filters, search
//! and sorts.

use kernel::{Currency, Cursor, Failure, Money, PageLimit};

use super::{Harness, new_product};
use crate::{Availability, CatalogError, ListProducts, ProductFilter, ProductSort};

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
    assert_eq!(err, CatalogError::Common(Failure::InvalidCursor));
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
        CatalogError::Common(Failure::Validation(_))
    ));
    let query = ListProducts {
        sort: Some(ProductSort::Relevance),
        ..ListProducts::default()
    };
    assert!(matches!(
        h.api.list_products(&h.admin, query).await.unwrap_err(),
        CatalogError::Common(Failure::Validation(_))
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
        CatalogError::Common(Failure::InvalidCursor)
    );
}
