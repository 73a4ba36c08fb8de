//! Events the catalog publishes. Wire contracts: add optional fields, never
//! rename or remove; a breaking change is a new `.v2` type.

use kernel::{IntegrationEvent, Money};
use serde::{Deserialize, Serialize};

use crate::{ProductId, Sku};

/// A product was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductCreated {
    /// The product.
    pub product_id: ProductId,
    /// Its SKU.
    pub sku: Sku,
    /// Its display name, as of this event.
    pub name: String,
    /// Its list price.
    pub price: Money,
    /// Whether it is for sale.
    pub active: bool,
}

impl IntegrationEvent for ProductCreated {
    const TYPE: &'static str = "catalog.product_created.v1";
    fn aggregate_id(&self) -> String {
        self.product_id.to_string()
    }
}

/// A product's name, description, price or sale status changed. Carries the
/// state after the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductUpdated {
    /// The product.
    pub product_id: ProductId,
    /// Its SKU.
    pub sku: Sku,
    /// Its display name, as of this event.
    pub name: String,
    /// Its list price.
    pub price: Money,
    /// Whether it is for sale.
    pub active: bool,
}

impl IntegrationEvent for ProductUpdated {
    const TYPE: &'static str = "catalog.product_updated.v1";
    fn aggregate_id(&self) -> String {
        self.product_id.to_string()
    }
}

/// A product's list price changed (published with `ProductUpdated`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductPriceChanged {
    /// The product.
    pub product_id: ProductId,
    /// Its SKU.
    pub sku: Sku,
    /// Its display name, as of this event.
    pub name: String,
    /// The price before.
    pub old_price: Money,
    /// The price now.
    pub new_price: Money,
    /// Whether it is for sale after the change. Events written before
    /// the field was added lack it: read as `true` (they were announced
    /// as on sale).
    #[serde(default = "for_sale")]
    pub active: bool,
}

fn for_sale() -> bool {
    true
}

impl IntegrationEvent for ProductPriceChanged {
    const TYPE: &'static str = "catalog.product_price_changed.v1";
    fn aggregate_id(&self) -> String {
        self.product_id.to_string()
    }
}
