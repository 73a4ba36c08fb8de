//! Domain rules of products: what a valid product and a valid change are.

use catalog_api::{NewProduct, ProductPatch, Sku};
use kernel::{FieldError, Money};

/// Longest product name, in characters.
const NAME_MAX: usize = 200;
/// Longest description, in characters.
const DESCRIPTION_MAX: usize = 5000;

/// A new product whose every field has been checked.
#[derive(Debug, Clone)]
pub(crate) struct ValidNewProduct {
    pub(crate) sku: Sku,
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) price: Money,
    pub(crate) active: bool,
}

/// A checked change to a product.
#[derive(Debug, Clone, Default)]
pub(crate) struct ValidPatch {
    pub(crate) name: Option<String>,
    pub(crate) description: Option<Option<String>>,
    pub(crate) price: Option<Money>,
    pub(crate) active: Option<bool>,
}

/// Checks a new product, reporting every invalid field at once.
pub(crate) fn validate_new(new: NewProduct) -> Result<ValidNewProduct, Vec<FieldError>> {
    let mut errors = Vec::new();
    let sku = Sku::parse(&new.sku)
        .map_err(|e| errors.push(FieldError::new("sku", e.to_string())))
        .ok();
    let name = check_name(&new.name, &mut errors);
    let description = check_description(new.description, &mut errors);
    let price = check_price(new.price, &mut errors);
    match (sku, name, description, price) {
        (Some(sku), Some(name), Some(description), Some(price)) if errors.is_empty() => {
            Ok(ValidNewProduct {
                sku,
                name,
                description,
                price,
                active: new.active.unwrap_or(true),
            })
        }
        _ => Err(errors),
    }
}

/// Checks a patch, reporting every invalid field at once.
pub(crate) fn validate_patch(patch: ProductPatch) -> Result<ValidPatch, Vec<FieldError>> {
    let mut errors = Vec::new();
    let name = patch.name.map(|n| check_name(&n, &mut errors));
    let description = patch.description.map(|d| check_description(d, &mut errors));
    let price = patch.price.map(|p| check_price(p, &mut errors));
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ValidPatch {
        name: name.flatten(),
        description: description.flatten(),
        price: price.flatten(),
        active: patch.active,
    })
}

fn check_name(raw: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    let name = raw.trim();
    let len = name.chars().count();
    if len == 0 || len > NAME_MAX {
        errors.push(FieldError::new(
            "name",
            format!("must be 1 to {NAME_MAX} characters (not counting surrounding spaces)"),
        ));
        return None;
    }
    Some(name.to_owned())
}

/// `Some(None)`: no description (absent or blank); `None`: invalid.
fn check_description(raw: Option<String>, errors: &mut Vec<FieldError>) -> Option<Option<String>> {
    let Some(raw) = raw else { return Some(None) };
    let description = raw.trim();
    if description.chars().count() > DESCRIPTION_MAX {
        errors.push(FieldError::new(
            "description",
            format!("must be at most {DESCRIPTION_MAX} characters"),
        ));
        return None;
    }
    Some((!description.is_empty()).then(|| description.to_owned()))
}

fn check_price(price: Money, errors: &mut Vec<FieldError>) -> Option<Money> {
    if price.amount_minor() < 0 {
        errors.push(FieldError::new(
            "price.amount_minor",
            "must not be negative",
        ));
        return None;
    }
    Some(price)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel::Currency;

    fn new(sku: &str, name: &str, amount: i64) -> NewProduct {
        NewProduct {
            sku: sku.into(),
            name: name.into(),
            description: None,
            price: Money::new(amount, Currency::EUR),
            active: None,
        }
    }

    #[test]
    fn a_valid_product_is_normalised() {
        let mut input = new("mug-1", "  Blue mug ", 0);
        input.description = Some("   ".into());
        let valid = validate_new(input).unwrap();
        assert_eq!(valid.sku.as_str(), "MUG-1");
        assert_eq!(valid.name, "Blue mug");
        assert_eq!(
            valid.description, None,
            "a blank description is no description"
        );
        assert!(valid.active);
    }

    #[test]
    fn every_invalid_field_is_reported() {
        let errors = validate_new(new("", "", -5)).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["sku", "name", "price.amount_minor"]);
    }

    #[test]
    fn name_length_counts_characters_not_bytes() {
        assert!(validate_new(new("A", &"é".repeat(200), 1)).is_ok());
        assert!(validate_new(new("A", &"é".repeat(201), 1)).is_err());
    }

    #[test]
    fn patch_null_description_clears_it() {
        let patch = ProductPatch {
            description: Some(None),
            ..ProductPatch::default()
        };
        assert_eq!(validate_patch(patch).unwrap().description, Some(None));
        let patch = ProductPatch {
            name: Some(" ".into()),
            ..ProductPatch::default()
        };
        assert_eq!(validate_patch(patch).unwrap_err()[0].field, "name");
    }
}
