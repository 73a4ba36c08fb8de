//! Contract cases for single products: create, read and update, validation,
//! duplicate SKUs, and who may write.

use kernel::{CallContext, Currency, Failure, Money};

use super::{Harness, new_product};
use crate::{CatalogError, NewProduct, ProductId, ProductPatch};

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
    let CatalogError::Common(Failure::Validation(errors)) = err else {
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
        matches!(&err, CatalogError::Common(Failure::Validation(errors)) if errors[0].field == "name"),
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
    assert_eq!(err, CatalogError::Common(Failure::Unauthenticated));
    let err = h
        .api
        .create_product(&h.customer, new_product("AUTH-1"))
        .await
        .unwrap_err();
    assert_eq!(err, CatalogError::Common(Failure::Forbidden));
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
    assert_eq!(err, CatalogError::Common(Failure::Forbidden));
    assert_eq!(
        h.api.get_product(&anonymous, created.id).await.unwrap(),
        created
    );
}
