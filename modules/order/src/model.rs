//! Orders as the API shows them, the events they are made of, and the fold
//! from one to the other (the same fold keeps the projection current and
//! rebuilds it).

use catalog_api::{ProductId, Sku};
use chrono::{DateTime, Utc};
use kernel::{Money, OrderId};
use order_api::OrderStatus;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Most units of one product in a cart.
pub const MAX_QUANTITY: i32 = 100;
/// Most lines in a cart.
pub const MAX_LINES: usize = 50;

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

/// An event of an order's history (what `order_events.data` holds, by kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OrderEvent {
    /// The order was placed.
    Placed {
        /// Who.
        customer_id: Uuid,
        /// What.
        lines: Vec<OrderLine>,
        /// For how much.
        total: Money,
        /// With which card.
        card_last4: String,
    },
    /// The inventory holds the stock.
    StockReserved,
    /// The amount is held on the card.
    PaymentAuthorized {
        /// The payment.
        payment_id: Uuid,
    },
    /// The held stock was sold.
    StockCommitted,
    /// The amount was taken.
    PaymentCaptured,
    /// Done.
    Confirmed,
    /// Sent.
    Shipped,
    /// The customer or an admin asked to cancel.
    CancellationRequested {
        /// Why.
        reason: String,
    },
    /// The hold on the card was released (or there was none).
    PaymentVoided,
    /// The amount taken was given back.
    PaymentRefunded,
    /// The held stock was given back (or there was none).
    StockReleased,
    /// The sold stock was put back on hand.
    StockRestocked,
    /// The order could not be completed.
    Failed {
        /// Why.
        reason: String,
    },
    /// The order was cancelled.
    Cancelled {
        /// Why.
        reason: String,
    },
}

impl OrderEvent {
    /// The event's kind as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            OrderEvent::Placed { .. } => "placed",
            OrderEvent::StockReserved => "stock_reserved",
            OrderEvent::PaymentAuthorized { .. } => "payment_authorized",
            OrderEvent::StockCommitted => "stock_committed",
            OrderEvent::PaymentCaptured => "payment_captured",
            OrderEvent::Confirmed => "confirmed",
            OrderEvent::Shipped => "shipped",
            OrderEvent::CancellationRequested { .. } => "cancellation_requested",
            OrderEvent::PaymentVoided => "payment_voided",
            OrderEvent::PaymentRefunded => "payment_refunded",
            OrderEvent::StockReleased => "stock_released",
            OrderEvent::StockRestocked => "stock_restocked",
            OrderEvent::Failed { .. } => "failed",
            OrderEvent::Cancelled { .. } => "cancelled",
        }
    }
}

/// The state of an order: the fold of its events. Stored as the projection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
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
    /// The payment, once authorized.
    pub payment_id: Option<Uuid>,
    /// Saga progress, as recorded.
    pub reserved: bool,
    /// The payment is authorized.
    pub authorized: bool,
    /// The stock is sold.
    pub committed: bool,
    /// The payment is captured.
    pub captured: bool,
    /// Compensations done.
    pub voided: bool,
    /// The capture was refunded.
    pub refunded: bool,
    /// The reservation was released.
    pub released: bool,
    /// The sold stock was put back.
    pub restocked: bool,
    /// Events folded (the last `seq`).
    pub version: i32,
    /// When it was placed.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl OrderState {
    /// The state after the first event, which must be `placed`.
    pub fn start(id: OrderId, event: &OrderEvent, at: DateTime<Utc>) -> Option<OrderState> {
        let OrderEvent::Placed {
            customer_id,
            lines,
            total,
            card_last4,
        } = event
        else {
            return None;
        };
        Some(OrderState {
            id,
            customer_id: *customer_id,
            status: OrderStatus::Pending,
            reason: None,
            lines: lines.clone(),
            total: *total,
            card_last4: card_last4.clone(),
            payment_id: None,
            reserved: false,
            authorized: false,
            committed: false,
            captured: false,
            voided: false,
            refunded: false,
            released: false,
            restocked: false,
            version: 1,
            created_at: at,
            updated_at: at,
        })
    }

    /// Whether `event` may follow now; the reason when not. A repeated
    /// progress event (a step recorded twice by two drivers) is `Ok(false)`:
    /// nothing to record.
    pub fn accepts(&self, event: &OrderEvent) -> Result<bool, String> {
        use OrderStatus as S;
        let progress_allowed = !self.status.is_final() && self.status != S::Shipped;
        let already = match event {
            OrderEvent::Placed { .. } => return Err("the order was placed already".into()),
            OrderEvent::StockReserved => self.reserved,
            OrderEvent::PaymentAuthorized { .. } => self.authorized,
            OrderEvent::StockCommitted => self.committed,
            OrderEvent::PaymentCaptured => self.captured,
            OrderEvent::Confirmed => {
                if self.status == S::Confirmed {
                    true
                } else if self.status != S::Paid || !self.committed {
                    return Err(format!("cannot confirm an order that is {}", self.status));
                } else {
                    false
                }
            }
            OrderEvent::Shipped => {
                if self.status == S::Shipped {
                    true
                } else if self.status != S::Confirmed {
                    return Err(format!("cannot ship an order that is {}", self.status));
                } else {
                    false
                }
            }
            OrderEvent::CancellationRequested { .. } => false,
            OrderEvent::PaymentVoided => self.voided,
            OrderEvent::PaymentRefunded => self.refunded,
            OrderEvent::StockReleased => self.released,
            OrderEvent::StockRestocked => self.restocked,
            OrderEvent::Failed { .. } | OrderEvent::Cancelled { .. } => {
                if self.status.is_final() {
                    true
                } else if self.status == S::Shipped {
                    return Err("the order was shipped".into());
                } else {
                    false
                }
            }
        };
        if already {
            return Ok(false);
        }
        if !progress_allowed {
            return Err(format!("the order is {}", self.status));
        }
        Ok(true)
    }

    /// Folds one more event in.
    pub fn apply(&mut self, event: &OrderEvent, at: DateTime<Utc>) {
        use OrderStatus as S;
        match event {
            OrderEvent::Placed { .. } | OrderEvent::CancellationRequested { .. } => {}
            OrderEvent::StockReserved => {
                self.reserved = true;
                if self.status == S::Pending {
                    self.status = S::Reserved;
                }
            }
            OrderEvent::PaymentAuthorized { payment_id } => {
                self.authorized = true;
                self.payment_id = Some(*payment_id);
            }
            OrderEvent::StockCommitted => self.committed = true,
            OrderEvent::PaymentCaptured => {
                self.captured = true;
                self.status = S::Paid;
            }
            OrderEvent::Confirmed => self.status = S::Confirmed,
            OrderEvent::Shipped => self.status = S::Shipped,
            OrderEvent::PaymentVoided => self.voided = true,
            OrderEvent::PaymentRefunded => self.refunded = true,
            OrderEvent::StockReleased => self.released = true,
            OrderEvent::StockRestocked => self.restocked = true,
            OrderEvent::Failed { reason } => {
                self.status = S::Failed;
                self.reason = Some(reason.clone());
            }
            OrderEvent::Cancelled { reason } => {
                self.status = S::Cancelled;
                self.reason = Some(reason.clone());
            }
        }
        self.version += 1;
        self.updated_at = at;
    }

    /// The order as the API shows it.
    pub fn to_order(&self) -> Order {
        Order {
            id: self.id,
            customer_id: self.customer_id,
            status: self.status,
            reason: self.reason.clone(),
            lines: self.lines.clone(),
            total: self.total,
            card_last4: self.card_last4.clone(),
            payment_id: self.payment_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel::Currency;

    fn placed() -> (OrderState, DateTime<Utc>) {
        let now = Utc::now();
        let total = Money::new(1000, Currency::EUR);
        let event = OrderEvent::Placed {
            customer_id: Uuid::now_v7(),
            lines: vec![],
            total,
            card_last4: "4242".into(),
        };
        (
            OrderState::start(OrderId::generate(), &event, now).unwrap(),
            now,
        )
    }

    #[test]
    fn the_happy_path_runs_pending_to_shipped() {
        let (mut state, now) = placed();
        let path = [
            (OrderEvent::StockReserved, OrderStatus::Reserved),
            (
                OrderEvent::PaymentAuthorized {
                    payment_id: Uuid::now_v7(),
                },
                OrderStatus::Reserved,
            ),
            (OrderEvent::StockCommitted, OrderStatus::Reserved),
            (OrderEvent::PaymentCaptured, OrderStatus::Paid),
            (OrderEvent::Confirmed, OrderStatus::Confirmed),
            (OrderEvent::Shipped, OrderStatus::Shipped),
        ];
        for (event, status) in path {
            assert_eq!(state.accepts(&event), Ok(true), "{event:?}");
            state.apply(&event, now);
            assert_eq!(state.status, status);
        }
        assert_eq!(state.version, 7);
    }

    #[test]
    fn illegal_transitions_are_refused_and_repeats_are_no_ops() {
        let (mut state, now) = placed();
        assert!(
            state.accepts(&OrderEvent::Shipped).is_err(),
            "not confirmed"
        );
        assert!(state.accepts(&OrderEvent::Confirmed).is_err(), "not paid");
        state.apply(&OrderEvent::StockReserved, now);
        assert_eq!(state.accepts(&OrderEvent::StockReserved), Ok(false));
        let failed = OrderEvent::Failed {
            reason: "no".into(),
        };
        state.apply(&failed, now);
        assert_eq!(state.status, OrderStatus::Failed);
        assert_eq!(
            state.accepts(&failed),
            Ok(false),
            "final: repeating is a no-op"
        );
        assert!(state.accepts(&OrderEvent::PaymentCaptured).is_err());
        assert!(
            state
                .accepts(&OrderEvent::Cancelled { reason: "x".into() })
                .is_ok()
        );
    }
}
