//! Domain rules of products: what a valid product and a valid change are.

use catalog_api::{
    CategoryId, NewCategory, NewProduct, ProductFilter, ProductPatch, ProductSort, Sku,
};
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
    pub(crate) category_id: Option<CategoryId>,
    pub(crate) images: Vec<String>,
    pub(crate) attributes: serde_json::Value,
}

/// A checked change to a product.
#[derive(Debug, Clone, Default)]
pub(crate) struct ValidPatch {
    pub(crate) name: Option<String>,
    pub(crate) description: Option<Option<String>>,
    pub(crate) price: Option<Money>,
    pub(crate) active: Option<bool>,
    pub(crate) category_id: Option<Option<CategoryId>>,
    pub(crate) images: Option<Vec<String>>,
    pub(crate) attributes: Option<serde_json::Value>,
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
    check_images(&new.images, &mut errors);
    let attributes = check_attributes(new.attributes, &mut errors);
    match (sku, name, description, price) {
        (Some(sku), Some(name), Some(description), Some(price)) if errors.is_empty() => {
            Ok(ValidNewProduct {
                sku,
                name,
                description,
                price,
                active: new.active.unwrap_or(true),
                category_id: new.category_id,
                images: new.images,
                attributes,
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
    if let Some(images) = &patch.images {
        check_images(images, &mut errors);
    }
    let attributes = patch.attributes.map(|a| check_attributes(a, &mut errors));
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ValidPatch {
        name: name.flatten(),
        description: description.flatten(),
        price: price.flatten(),
        active: patch.active,
        category_id: patch.category_id,
        images: patch.images,
        attributes,
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

/// Most images per product.
const IMAGES_MAX: usize = 20;
/// Largest attributes object, serialised.
const ATTRIBUTES_MAX_BYTES: usize = 8192;

/// Image URLs must be http(s) on a public host: the shop (and every
/// browser showing the product) fetches them, so no internal addresses.
fn check_images(images: &[String], errors: &mut Vec<FieldError>) {
    if images.len() > IMAGES_MAX {
        errors.push(FieldError::new(
            "images",
            format!("at most {IMAGES_MAX} images"),
        ));
    }
    for (i, raw) in images.iter().enumerate() {
        if let Err(message) = check_image_url(raw) {
            errors.push(FieldError::new(format!("images[{i}]"), message));
        }
    }
}

/// The schema's `ImageUrl` (`kernel::patterns::PUBLIC_HTTP_URL`): an http(s)
/// URL on a public host name, at most 2048 characters. Internal names
/// (`localhost`, `*.local`, `*.internal`, `*.lan`, names without a dot) and
/// IP literals are outside the pattern.
fn check_image_url(raw: &str) -> Result<(), String> {
    if raw.len() > 2048 || !kernel::patterns::is_public_http_url(raw) {
        return Err(
            "must be an http or https URL on a public host name, at most 2048 characters"
                .to_owned(),
        );
    }
    Ok(())
}

fn check_attributes(
    attributes: serde_json::Map<String, serde_json::Value>,
    errors: &mut Vec<FieldError>,
) -> serde_json::Value {
    let value = serde_json::Value::Object(attributes);
    if value.to_string().len() > ATTRIBUTES_MAX_BYTES {
        errors.push(FieldError::new(
            "attributes",
            format!("must be at most {ATTRIBUTES_MAX_BYTES} bytes of JSON"),
        ));
    }
    value
}

/// A checked category.
pub(crate) struct ValidCategory {
    pub(crate) name: String,
    pub(crate) slug: String,
    pub(crate) parent_id: Option<CategoryId>,
}

/// Checks a new category's name and slug (the parent is checked against the database).
pub(crate) fn validate_category(new: NewCategory) -> Result<ValidCategory, Vec<FieldError>> {
    let mut errors = Vec::new();
    let name = new.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        errors.push(FieldError::new("name", "must be 1 to 100 characters"));
    }
    let slug_ok = !new.slug.is_empty()
        && new.slug.len() <= 100
        && new.slug.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if !slug_ok {
        errors.push(FieldError::new(
            "slug",
            "must be lower-case letters and digits in words joined by single dashes",
        ));
    }
    if errors.is_empty() {
        Ok(ValidCategory {
            name,
            slug: new.slug,
            parent_id: new.parent_id,
        })
    } else {
        Err(errors)
    }
}

/// Longest search query, in characters.
const QUERY_MAX: usize = 200;

/// Checks a list's filter and sort; returns the effective sort.
pub(crate) fn validate_listing(
    filter: &ProductFilter,
    sort: Option<ProductSort>,
) -> Result<ProductSort, Vec<FieldError>> {
    let mut errors = Vec::new();
    if let (Some(min), Some(max)) = (filter.min_price, filter.max_price)
        && min > max
    {
        errors.push(FieldError::new("min_price", "must not be above max_price"));
    }
    if filter.min_price.is_some_and(|p| p < 0) {
        errors.push(FieldError::new("min_price", "prices are not negative"));
    }
    if filter.max_price.is_some_and(|p| p < 0) {
        errors.push(FieldError::new("max_price", "prices are not negative"));
    }
    let q = filter.q.as_deref().map(str::trim);
    if q.is_some_and(|q| q.is_empty() || q.chars().count() > QUERY_MAX) {
        errors.push(FieldError::new(
            "q",
            format!("must be 1 to {QUERY_MAX} characters"),
        ));
    }
    let sort = sort.unwrap_or(if q.is_some() {
        ProductSort::Relevance
    } else {
        ProductSort::Created
    });
    if sort == ProductSort::Relevance && q.is_none() {
        errors.push(FieldError::new("sort", "relevance needs a search (q)"));
    }
    if errors.is_empty() {
        Ok(sort)
    } else {
        Err(errors)
    }
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
            category_id: None,
            images: Vec::new(),
            attributes: serde_json::Map::new(),
        }
    }

    #[test]
    fn image_urls_must_be_public() {
        for ok in [
            "https://cdn.example.com/a.png",
            "HTTPS://CDN.Example.com:8443/a.png?v=2",
        ] {
            assert!(check_image_url(ok).is_ok(), "{ok}");
        }
        let long = format!("https://cdn.example.com/{}", "a".repeat(2048));
        for bad in [
            "ftp://example.com/a.png",
            "https://localhost/a.png",
            "http://127.0.0.1/a.png",
            "http://10.0.0.8/a.png",
            "http://192.168.1.1/a.png",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/a.png",
            "http://intranet/a.png",
            "http://printer.local/a.png",
            "/relative.png",
            "http://93.184.216.34/x.jpg",
            "HTTP://0.AA*",
            long.as_str(),
        ] {
            assert!(check_image_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slugs_and_listing_rules() {
        let category = |slug: &str| NewCategory {
            name: "N".into(),
            slug: slug.into(),
            parent_id: None,
        };
        assert!(validate_category(category("kitchen-mugs")).is_ok());
        for bad in ["Kitchen", "a--b", "-a", "a-", "", "a b"] {
            assert!(validate_category(category(bad)).is_err(), "{bad}");
        }
        let q = ProductFilter {
            q: Some("mug".into()),
            ..ProductFilter::default()
        };
        assert_eq!(validate_listing(&q, None).unwrap(), ProductSort::Relevance);
        assert_eq!(
            validate_listing(&ProductFilter::default(), None).unwrap(),
            ProductSort::Created
        );
        assert!(validate_listing(&ProductFilter::default(), Some(ProductSort::Relevance)).is_err());
        // Each negative bound is named as itself.
        let negative_max = ProductFilter {
            max_price: Some(-1),
            ..ProductFilter::default()
        };
        let fields: Vec<String> = validate_listing(&negative_max, None)
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["max_price"]);
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
