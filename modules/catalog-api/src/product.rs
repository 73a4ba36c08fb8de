//! Product DTOs, ids and the SKU newtype.

use std::fmt;

use chrono::{DateTime, Utc};
use kernel::{Cursor, Money, PageLimit};

use crate::CategoryId;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Identifier of a product (UUID v7, so ids sort by creation time).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(transparent)]
#[schema(value_type = Uuid)]
pub struct ProductId(Uuid);

impl ProductId {
    /// A new, time-ordered id.
    pub fn generate() -> ProductId {
        ProductId(Uuid::now_v7())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for ProductId {
    fn from(id: Uuid) -> ProductId {
        ProductId(id)
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A stock keeping unit: 1 to 64 characters of `A-Z 0-9 . _ -`, starting
/// with a letter or digit. Stored upper-case, so `abc-1` and `ABC-1` are
/// the same SKU.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(
    value_type = String,
    example = "MUG-BLUE-01",
    min_length = 1,
    max_length = 64,
    pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
)]
pub struct Sku(String);

/// Why a text is not a SKU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a SKU is 1 to 64 characters of A-Z, 0-9, '.', '_' or '-', starting with a letter or digit"
)]
pub struct SkuError;

impl Sku {
    /// Longest SKU.
    pub const MAX_LEN: usize = 64;

    /// Parses and normalises (upper-cases) a SKU.
    ///
    /// # Errors
    /// [`SkuError`] when `raw` breaks the rules above.
    pub fn parse(raw: &str) -> Result<Sku, SkuError> {
        let bytes = raw.as_bytes();
        let first_ok = bytes.first().is_some_and(u8::is_ascii_alphanumeric);
        let rest_ok = bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if first_ok && rest_ok && bytes.len() <= Self::MAX_LEN {
            Ok(Sku(raw.to_ascii_uppercase()))
        } else {
            Err(SkuError)
        }
    }

    /// The SKU as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Sku {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Sku, D::Error> {
        let raw = String::deserialize(d)?;
        Sku::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A product as the catalog returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Product {
    /// Product id.
    pub id: ProductId,
    /// Unique stock keeping unit, upper-case.
    pub sku: Sku,
    /// Display name.
    pub name: String,
    /// Longer description, if any.
    pub description: Option<String>,
    /// List price.
    pub price: Money,
    /// Whether the product is for sale.
    pub active: bool,
    /// Its category, if any.
    pub category_id: Option<CategoryId>,
    /// Image URLs (http or https).
    pub images: Vec<String>,
    /// Free-form attributes (`{"colour": "blue"}`).
    #[schema(value_type = Object)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// Whether it can be bought now, as the inventory last reported.
    pub availability: Availability,
    /// When the product was created.
    pub created_at: DateTime<Utc>,
    /// When the product last changed.
    pub updated_at: DateTime<Utc>,
}

/// A product to create. Fields are checked by the catalog, which reports
/// every invalid one at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"sku": "MUG-BLUE-01", "name": "Blue mug", "description": "350 ml, stoneware", "price": {"amount_minor": 1299, "currency": "EUR"}}))]
pub struct NewProduct {
    /// Stock keeping unit (see [`Sku`]); must be unique.
    #[schema(value_type = Sku)]
    pub sku: String,
    /// Display name, 1 to 200 characters not counting surrounding whitespace.
    #[schema(
        pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[\s\S]{0,198}[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub name: String,
    /// Optional description, at most 5000 characters not counting
    /// surrounding whitespace (blank: none).
    #[serde(default)]
    #[schema(
        pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*(?:[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[\s\S]{0,4998}[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?)?[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub description: Option<String>,
    /// List price; the amount may not be negative.
    #[serde(deserialize_with = "kernel::json::object")]
    pub price: Money,
    /// Whether the product is for sale (default `true`).
    #[serde(default)]
    pub active: Option<bool>,
    /// Its category.
    #[serde(default)]
    pub category_id: Option<CategoryId>,
    /// Image URLs: http or https, public hosts only, at most 20.
    #[serde(default)]
    #[schema(value_type = Vec<ImageUrl>, max_items = 20)]
    pub images: Vec<String>,
    /// Free-form attributes (a JSON object, at most 8 KiB).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// Changes to a product: only the fields present are changed; `description:
/// null` removes the description (JSON merge patch). The SKU cannot change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"price": {"amount_minor": 999, "currency": "EUR"}, "active": false}))]
pub struct ProductPatch {
    /// New display name, 1 to 200 characters not counting surrounding
    /// whitespace. A name cannot be removed: `null` leaves it as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[\s\S]{0,198}[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub name: Option<String>,
    /// New description, at most 5000 characters not counting surrounding
    /// whitespace; `null` (or blank) removes it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*(?:[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[\s\S]{0,4998}[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?)?[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$")]
    pub description: Option<Option<String>>,
    /// New list price. A price cannot be removed: `null` leaves it as it is.
    #[serde(
        default,
        deserialize_with = "kernel::json::object_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub price: Option<Money>,
    /// New sale status; `null` leaves it as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// New category; `null` takes it out of its category.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<CategoryId>)]
    pub category_id: Option<Option<CategoryId>>,
    /// New image URLs (replaces the list): http or https, public hosts
    /// only, at most 20; `null` removes them all.
    #[serde(
        default,
        deserialize_with = "kernel::json::null_empties",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Vec<ImageUrl>>, max_items = 20)]
    pub images: Option<Vec<String>>,
    /// New attributes (replaces the object); `null` removes them all.
    #[serde(
        default,
        deserialize_with = "kernel::json::null_empties",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An image URL as a product accepts it (schema only; the field is text):
/// http or https on a public host name, at most 2048 characters. The
/// pattern is the rule the catalog checks (`kernel::patterns::PUBLIC_HTTP_URL`):
/// no internal name (`localhost`, `*.local`, `*.internal`, `*.lan`, a name
/// without a dot), no IP literal, no user info, no punycode, and anything
/// outside URL characters percent-encoded.
#[derive(ToSchema)]
#[schema(
    value_type = String,
    max_length = 2048,
    example = "https://images.example.com/mug-blue.jpg",
    pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://(?![^/?#]*[Xx][Nn]--)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?!(?:[Ll][Oo][Cc][Aa][Ll](?:[Hh][Oo][Ss][Tt])?|[Ll][Aa][Nn]|[Ii][Nn][Tt][Ee][Rr][Nn][Aa][Ll])(?:[:/?#]|$))[A-Za-z]{2,63}(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(?:/[/A-Za-z0-9._~!$&'()*+,;=:@%-]*)?(?:\?[/?A-Za-z0-9._~!$&'()*+,;=:@%-]*)?(?:#[/?A-Za-z0-9._~!$&'()*+,;=:@%-]*)?$"
)]
pub struct ImageUrl(pub String);

/// Distinguishes a field set to `null` (`Some(None)`) from an absent one (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Whether a product can be bought now (the inventory's word, kept by the
/// catalog from inventory events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    /// Never stocked.
    Unknown,
    /// Plenty.
    InStock,
    /// At or below the SKU's low-stock threshold.
    LowStock,
    /// None available.
    OutOfStock,
}

impl Availability {
    /// The value as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Unknown => "unknown",
            Availability::InStock => "in_stock",
            Availability::LowStock => "low_stock",
            Availability::OutOfStock => "out_of_stock",
        }
    }
}

impl std::str::FromStr for Availability {
    type Err = String;

    fn from_str(s: &str) -> Result<Availability, String> {
        match s {
            "unknown" => Ok(Availability::Unknown),
            "in_stock" => Ok(Availability::InStock),
            "low_stock" => Ok(Availability::LowStock),
            "out_of_stock" => Ok(Availability::OutOfStock),
            other => Err(format!("unknown availability `{other}`")),
        }
    }
}

/// Order of a product list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProductSort {
    /// Oldest first (the default without `q`).
    Created,
    /// Newest first.
    Newest,
    /// Cheapest first.
    PriceAsc,
    /// Dearest first.
    PriceDesc,
    /// By name.
    Name,
    /// Best match first (the default with `q`; needs `q`).
    Relevance,
}

impl ProductSort {
    /// The value as sent in `sort=`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProductSort::Created => "created",
            ProductSort::Newest => "newest",
            ProductSort::PriceAsc => "price_asc",
            ProductSort::PriceDesc => "price_desc",
            ProductSort::Name => "name",
            ProductSort::Relevance => "relevance",
        }
    }
}

/// Which products to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductFilter {
    /// In this category or its subcategories.
    pub category_id: Option<CategoryId>,
    /// Price at least this many minor units.
    pub min_price: Option<i64>,
    /// Price at most this many minor units.
    pub max_price: Option<i64>,
    /// For sale or not.
    pub active: Option<bool>,
    /// `true`: in stock or low; `false`: out of stock or never stocked.
    pub in_stock: Option<bool>,
    /// Full-text search over SKU, name and description (web search syntax).
    pub q: Option<String>,
}

/// Which page of products to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListProducts {
    /// Most products on one page.
    pub limit: PageLimit,
    /// Where the previous page ended.
    pub cursor: Option<Cursor>,
    /// Search terms, category and price range, and the order.
    pub filter: ProductFilter,
    /// In which order (default: `created`, or `relevance` with `q`).
    pub sort: Option<ProductSort>,
}

#[cfg(test)]
mod tests;
