//! Where an order stands.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `pending → reserved → paid → confirmed → shipped`, or `cancelled` /
/// `failed` with a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Placed; nothing held yet.
    Pending,
    /// Stock is held for it (and the payment is being authorized or the
    /// stock committed).
    Reserved,
    /// The payment was captured.
    Paid,
    /// Done: stock sold, payment taken.
    Confirmed,
    /// On its way.
    Shipped,
    /// Cancelled by the customer or an admin; everything given back.
    Cancelled,
    /// Could not be completed (no stock, card declined...); everything given back.
    Failed,
}

impl OrderStatus {
    /// The status's name on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Reserved => "reserved",
            OrderStatus::Paid => "paid",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Failed => "failed",
        }
    }

    /// Whether nothing will change it any more.
    pub fn is_final(self) -> bool {
        matches!(self, OrderStatus::Cancelled | OrderStatus::Failed)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for OrderStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<OrderStatus, String> {
        [
            OrderStatus::Pending,
            OrderStatus::Reserved,
            OrderStatus::Paid,
            OrderStatus::Confirmed,
            OrderStatus::Shipped,
            OrderStatus::Cancelled,
            OrderStatus::Failed,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
        .ok_or_else(|| format!("unknown order status `{s}`"))
    }
}
