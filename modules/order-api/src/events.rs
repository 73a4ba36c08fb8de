//! Integration events of the order module.

use kernel::{IntegrationEvent, Money, OrderId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The order went through: stock sold, payment captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    /// The order.
    pub order_id: OrderId,
    /// Who placed it.
    pub customer_id: Uuid,
    /// What was charged.
    pub total: Money,
    /// Units ordered, all lines.
    pub items: i32,
}

impl IntegrationEvent for OrderConfirmed {
    const TYPE: &'static str = "order.confirmed.v1";
    fn aggregate_id(&self) -> String {
        self.order_id.to_string()
    }
}

/// The order could not be completed; whatever was held was given back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFailed {
    /// The order.
    pub order_id: OrderId,
    /// Who placed it.
    pub customer_id: Uuid,
    /// Why, for people (`insufficient stock for ...`, `card declined ...`).
    pub reason: String,
}

impl IntegrationEvent for OrderFailed {
    const TYPE: &'static str = "order.failed.v1";
    fn aggregate_id(&self) -> String {
        self.order_id.to_string()
    }
}

/// The order was cancelled; the payment was voided or refunded and the
/// stock given back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    /// The order.
    pub order_id: OrderId,
    /// Who placed it.
    pub customer_id: Uuid,
    /// Why it was cancelled, as the customer or admin said.
    pub reason: String,
}

impl IntegrationEvent for OrderCancelled {
    const TYPE: &'static str = "order.cancelled.v1";
    fn aggregate_id(&self) -> String {
        self.order_id.to_string()
    }
}
