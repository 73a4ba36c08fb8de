//! Orders as the API shows them: the wire types of `/cart` and `/orders`
//! (the events and the fold behind them are in `domain.rs`).

use catalog_api::{ProductId, Sku};
use chrono::{DateTime, Utc};
use kernel::{Money, OrderId};
use order_api::OrderStatus;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// One line of a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CartItem {
    /// The product (for sale).
    #[schema(value_type = ProductId)]
    pub product_id: Uuid,
    /// Units, 1 to 100.
    #[serde(deserialize_with = "kernel::json::whole")]
    #[schema(minimum = 1, maximum = 100)]
    pub quantity: i32,
}

/// A customer's cart. Prices are the catalog's at checkout, never the client's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cart {
    /// At most 50 lines, each product once.
    #[serde(deserialize_with = "kernel::json::objects")]
    #[schema(max_items = 50)]
    pub items: Vec<CartItem>,
}

/// The card to pay with.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentMethodInput {
    /// 12 to 19 digits. Sent to the payment provider; only the last four
    /// digits are kept. Sandbox cards: 4242424242424242 succeeds,
    /// 4000000000000002 is declined. Spaces and dashes are ignored.
    #[schema(
        example = "4242424242424242",
        pattern = r"^[ -]*(?:[0-9][ -]*){12,19}$"
    )]
    pub card_number: String,
}

impl std::fmt::Debug for PaymentMethodInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PaymentMethodInput(<redacted>)")
    }
}

/// `POST /orders`: the cart's items are ordered and paid with this card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// The card.
    #[serde(deserialize_with = "kernel::json::object")]
    pub payment_method: PaymentMethodInput,
}

/// One line of an order, priced from the catalog when it was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderLine {
    /// The product.
    pub product_id: ProductId,
    /// Its SKU.
    pub sku: Sku,
    /// Its name then.
    pub name: String,
    /// Its price then.
    pub unit_price: Money,
    /// Units.
    pub quantity: i32,
    /// `unit_price × quantity`.
    pub line_total: Money,
}

/// An order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Order {
    /// The order.
    pub id: OrderId,
    /// Who placed it.
    pub customer_id: Uuid,
    /// Where it stands.
    pub status: OrderStatus,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
    /// What was ordered.
    pub lines: Vec<OrderLine>,
    /// What it costs.
    pub total: Money,
    /// The card's last four digits.
    pub card_last4: String,
    /// The payment (`GET /api/v1/payments/{id}`), once authorized.
    #[schema(value_type = Option<payment_api::PaymentId>)]
    pub payment_id: Option<Uuid>,
    /// When it was placed.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// One entry of an order's timeline: an event, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimelineEntry {
    /// Position in the order's history, from 1.
    pub seq: i32,
    /// What happened: `placed`, `stock_reserved`, `payment_authorized`,
    /// `stock_committed`, `payment_captured`, `confirmed`, `shipped`,
    /// `cancellation_requested`, `payment_voided`, `payment_refunded`,
    /// `stock_released`, `stock_restocked`, `failed`, `cancelled`.
    pub kind: String,
    /// Details of the event.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// When.
    pub at: DateTime<Utc>,
}
