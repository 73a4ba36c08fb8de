//! Tests of the product DTOs: SKU rules, patches (null versus absent, no SKU),
//! and the image URL schema.

use super::*;

#[test]
fn sku_rules() {
    assert_eq!(
        Sku::parse("mug-blue_01.x").unwrap().as_str(),
        "MUG-BLUE_01.X"
    );
    assert!(Sku::parse("").is_err());
    assert!(Sku::parse("-MUG").is_err());
    assert!(Sku::parse("MUG BLUE").is_err());
    assert!(Sku::parse("MÜG").is_err());
    assert!(Sku::parse(&"A".repeat(64)).is_ok());
    assert!(Sku::parse(&"A".repeat(65)).is_err());
}

#[test]
fn patch_distinguishes_null_from_absent() {
    let absent: ProductPatch = serde_json::from_str("{}").unwrap();
    assert_eq!(absent.description, None);
    let null: ProductPatch = serde_json::from_str(r#"{"description":null}"#).unwrap();
    assert_eq!(null.description, Some(None));
    let set: ProductPatch = serde_json::from_str(r#"{"description":"x"}"#).unwrap();
    assert_eq!(set.description, Some(Some("x".into())));
    // Serialising keeps the distinction, which the HTTP client relies on.
    assert_eq!(
        serde_json::to_string(&null).unwrap(),
        r#"{"description":null}"#
    );
    assert_eq!(serde_json::to_string(&absent).unwrap(), "{}");
}

#[test]
fn sku_cannot_be_patched() {
    let err = serde_json::from_str::<ProductPatch>(r#"{"sku":"X"}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `sku`"));
}

#[test]
fn the_image_url_schema_states_the_rule_the_catalog_checks() {
    let schema = serde_json::to_value(<ImageUrl as utoipa::PartialSchema>::schema()).unwrap();
    assert_eq!(
        schema["pattern"].as_str(),
        Some(kernel::patterns::PUBLIC_HTTP_URL)
    );
}
