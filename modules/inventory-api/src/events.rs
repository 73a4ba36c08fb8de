//! Events the inventory publishes. Wire contracts: add optional fields, never
//! rename or remove.

use catalog_api::Sku;
use kernel::IntegrationEvent;
use serde::{Deserialize, Serialize};

/// The stock of a SKU changed (any movement).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockChanged {
    /// The SKU.
    pub sku: Sku,
    /// Units on hand now.
    pub on_hand: i32,
    /// Units reserved now.
    pub reserved: i32,
    /// Units available now.
    pub available: i32,
    /// The SKU's low-stock threshold (optional: added after v1 was first published).
    #[serde(default)]
    pub low_stock_threshold: Option<i32>,
    /// The stock row's version: one up with every movement of the SKU, so
    /// the higher of two events is the newer state. Events can arrive out
    /// of order (several consumers of a broker queue, a requeued or
    /// redriven message): keep the highest seen, ignore the rest. Optional:
    /// absent from events published before it was added (older than any
    /// event that has it).
    #[serde(default)]
    pub version: Option<i64>,
}

impl IntegrationEvent for StockChanged {
    const TYPE: &'static str = "inventory.stock_changed.v1";
    fn aggregate_id(&self) -> String {
        self.sku.to_string()
    }
}

/// Available stock fell to or below the SKU's threshold (published once a
/// fall: when it gets there, not on every change below it, nor again when
/// reserved units given back (a release, an expiry) and taken again cross
/// it once more; after units come in that take it above the threshold, the
/// next fall publishes it again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LowStock {
    /// The SKU.
    pub sku: Sku,
    /// Units available now.
    pub available: i32,
    /// The SKU's low-stock threshold it fell to or below.
    pub threshold: i32,
}

impl IntegrationEvent for LowStock {
    const TYPE: &'static str = "inventory.low_stock.v1";
    fn aggregate_id(&self) -> String {
        self.sku.to_string()
    }
}

/// Nothing of the SKU is available any more (published once a fall, after
/// a `LowStock` of the same fall too; not again when its last units are
/// given back by a release or an expiry and taken again, only after units
/// come in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutOfStock {
    /// The SKU.
    pub sku: Sku,
}

impl IntegrationEvent for OutOfStock {
    const TYPE: &'static str = "inventory.out_of_stock.v1";
    fn aggregate_id(&self) -> String {
        self.sku.to_string()
    }
}
