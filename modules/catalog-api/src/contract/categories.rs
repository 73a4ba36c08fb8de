//! Contract cases for categories: one level of nesting, unique slugs, and
//! listing products by category.

use kernel::{CallContext, Failure};

use super::{Harness, new_product};
use crate::{CatalogError, ListProducts, NewCategory, ProductFilter};

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
        matches!(&too_deep, CatalogError::Common(Failure::Validation(e)) if e[0].field == "parent_id"),
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
        CatalogError::Common(Failure::Forbidden)
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
        CatalogError::Common(Failure::Validation(e)) if e[0].field == "category_id"
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
