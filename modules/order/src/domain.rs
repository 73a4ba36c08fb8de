//! The order's rules, free of storage: the events an order is made of, the
//! fold from them to its state (the same fold keeps the projection current
//! and rebuilds it), and what makes a cart and an idempotency key valid.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use kernel::{Failure, FieldError, Money, OrderId};
use order_api::OrderStatus;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::OrderError;
use crate::model::{Cart, Order, OrderLine, PlaceOrder};

/// Most units of one product in a cart.
pub const MAX_QUANTITY: i32 = 100;
/// Most lines in a cart.
pub const MAX_LINES: usize = 50;

/// An event of an order's history (what `order_events.data` holds, by kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OrderEvent {
    /// The order was placed.
    Placed {
        /// The customer who placed it.
        customer_id: Uuid,
        /// The cart's lines at the catalog's prices then.
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
        /// The payment module's id of the authorized payment.
        payment_id: Uuid,
    },
    /// The held stock was sold.
    StockCommitted,
    /// The amount was taken.
    PaymentCaptured,
    /// Every step succeeded: the order is the customer's.
    Confirmed,
    /// The order left the warehouse (an admin said so).
    Shipped,
    /// The customer or an admin asked to cancel.
    CancellationRequested {
        /// Who asked: the customer or the shop.
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
        /// The step that failed and why, in words for the customer.
        reason: String,
    },
    /// The order was cancelled.
    Cancelled {
        /// Who asked for it (the request's reason).
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

/// The state of an order: the fold of its events. Stored as the projection
/// (JSON): the order as the API shows it and the saga's progress side by
/// side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    /// The order as the API shows it.
    #[serde(flatten)]
    pub order: Order,
    /// Saga progress, as recorded.
    pub reserved: bool,
    /// The payment is authorized.
    pub authorized: bool,
    /// The stock is sold.
    pub committed: bool,
    /// The payment is captured.
    pub captured: bool,
    /// The authorization was voided (or there was none to void).
    pub voided: bool,
    /// The capture was refunded.
    pub refunded: bool,
    /// The reservation was released.
    pub released: bool,
    /// The sold stock was put back.
    pub restocked: bool,
    /// Events folded (the last `seq`).
    pub version: i32,
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
            order: Order {
                id,
                customer_id: *customer_id,
                status: OrderStatus::Pending,
                reason: None,
                lines: lines.clone(),
                total: *total,
                card_last4: card_last4.clone(),
                payment_id: None,
                created_at: at,
                updated_at: at,
            },
            reserved: false,
            authorized: false,
            committed: false,
            captured: false,
            voided: false,
            refunded: false,
            released: false,
            restocked: false,
            version: 1,
        })
    }

    /// Whether `event` may follow now; the reason when not. A repeated
    /// progress event (a step recorded twice by two drivers) is `Ok(false)`:
    /// nothing to record.
    pub fn accepts(&self, event: &OrderEvent) -> Result<bool, String> {
        use OrderStatus as S;
        let progress_allowed = !self.order.status.is_final() && self.order.status != S::Shipped;
        let already = match event {
            OrderEvent::Placed { .. } => return Err("the order was placed already".into()),
            OrderEvent::StockReserved => self.reserved,
            OrderEvent::PaymentAuthorized { .. } => self.authorized,
            OrderEvent::StockCommitted => self.committed,
            OrderEvent::PaymentCaptured => self.captured,
            OrderEvent::Confirmed => {
                if self.order.status == S::Confirmed {
                    true
                } else if self.order.status != S::Paid || !self.committed {
                    return Err(format!(
                        "cannot confirm an order that is {}",
                        self.order.status
                    ));
                } else {
                    false
                }
            }
            OrderEvent::Shipped => {
                if self.order.status == S::Shipped {
                    true
                } else if self.order.status != S::Confirmed {
                    return Err(format!(
                        "cannot ship an order that is {}",
                        self.order.status
                    ));
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
                if self.order.status.is_final() {
                    true
                } else if self.order.status == S::Shipped {
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
            return Err(format!("the order is {}", self.order.status));
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
                if self.order.status == S::Pending {
                    self.order.status = S::Reserved;
                }
            }
            OrderEvent::PaymentAuthorized { payment_id } => {
                self.authorized = true;
                self.order.payment_id = Some(*payment_id);
            }
            OrderEvent::StockCommitted => self.committed = true,
            OrderEvent::PaymentCaptured => {
                self.captured = true;
                self.order.status = S::Paid;
            }
            OrderEvent::Confirmed => self.order.status = S::Confirmed,
            OrderEvent::Shipped => self.order.status = S::Shipped,
            OrderEvent::PaymentVoided => self.voided = true,
            OrderEvent::PaymentRefunded => self.refunded = true,
            OrderEvent::StockReleased => self.released = true,
            OrderEvent::StockRestocked => self.restocked = true,
            OrderEvent::Failed { reason } => {
                self.order.status = S::Failed;
                self.order.reason = Some(reason.clone());
            }
            OrderEvent::Cancelled { reason } => {
                self.order.status = S::Cancelled;
                self.order.reason = Some(reason.clone());
            }
        }
        self.version += 1;
        self.order.updated_at = at;
    }

    /// The order as the API shows it.
    pub fn to_order(&self) -> Order {
        self.order.clone()
    }
}

/// A valid `Idempotency-Key`: 1 to 255 visible ASCII characters.
///
/// # Errors
/// [`OrderError::IdempotencyKeyRequired`] for a missing or malformed key.
pub fn idempotency_key(raw: Option<&str>) -> Result<String, OrderError> {
    match raw {
        Some(key)
            if !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(key.to_owned())
        }
        _ => Err(OrderError::IdempotencyKeyRequired),
    }
}

/// What identifies a request body for its idempotency key, without the
/// card number: its length and last four digits stand for it (a hash of
/// a card number could be reversed by trying them all).
pub(crate) fn fingerprint(customer: Uuid, key: &str, request: &PlaceOrder) -> String {
    let card = request.payment_method.card_number.replace([' ', '-'], "");
    let last4 = card.get(card.len().saturating_sub(4)..).unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(customer.as_bytes());
    hasher.update(key.as_bytes());
    hasher.update(format!("card:{}:{last4}", card.len()).as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What is wrong with a cart's shape: too many lines, quantities outside
/// 1..=100, a product twice. Whether its products are for sale is the
/// catalog's to say.
pub(crate) fn cart_errors(cart: &Cart) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if cart.items.len() > MAX_LINES {
        errors.push(FieldError::new(
            "items",
            format!("at most {MAX_LINES} lines"),
        ));
    }
    let mut seen = HashSet::new();
    for (i, item) in cart.items.iter().enumerate() {
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            errors.push(FieldError::new(
                format!("items[{i}].quantity"),
                format!("must be 1 to {MAX_QUANTITY}"),
            ));
        }
        if !seen.insert(item.product_id) {
            errors.push(FieldError::new(
                format!("items[{i}].product_id"),
                "appears twice; set one quantity",
            ));
        }
    }
    errors
}

/// The total of priced lines; a validation error when they are priced in
/// different currencies. `lines` is not empty.
pub(crate) fn total(lines: &[OrderLine]) -> Result<Money, OrderError> {
    let currency = lines
        .first()
        .map(|l| l.unit_price.currency())
        .ok_or_else(|| OrderError::Common(Failure::Unexpected("an order without lines".into())))?;
    let mut total = Money::new(0, currency);
    for line in lines {
        total = total.checked_add(line.line_total).map_err(|e| {
            let message = match e {
                kernel::MoneyError::Overflow => "comes to more than an order's total can hold",
                _ => "holds products priced in different currencies",
            };
            OrderError::Common(Failure::Validation(vec![FieldError::new("cart", message)]))
        })?;
    }
    if total.amount_minor() <= 0 {
        // A card payment of nothing cannot be authorized: refused before
        // any stock is held, not failed after.
        return Err(OrderError::Common(Failure::Validation(vec![
            FieldError::new(
                "cart",
                "comes to nothing to pay: free products cannot be ordered alone",
            ),
        ])));
    }
    Ok(total)
}

/// `unit_price × quantity`; `None` when more than an amount can hold
/// (never saturated: an order must not silently charge another sum).
pub(crate) fn line_total(unit_price: Money, quantity: i32) -> Option<Money> {
    unit_price.checked_mul(i64::from(quantity)).ok()
}

#[cfg(test)]
mod tests;
