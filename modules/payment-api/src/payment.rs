//! Payments and their ledger.

use std::fmt;

use chrono::{DateTime, Utc};
use kernel::{Money, OrderId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A payment's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Uuid)]
pub struct PaymentId(Uuid);

impl PaymentId {
    /// A new, time-ordered id.
    pub fn generate() -> PaymentId {
        PaymentId(Uuid::now_v7())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for PaymentId {
    fn from(id: Uuid) -> PaymentId {
        PaymentId(id)
    }
}

impl fmt::Display for PaymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Asked of the provider; the answer is not known yet.
    Authorizing,
    /// The amount is held on the card.
    Authorized,
    /// The provider refused the card.
    Declined,
    /// The amount was taken.
    Captured,
    /// The hold was released; nothing was taken.
    Voided,
    /// The amount taken was given back.
    Refunded,
}

impl PaymentStatus {
    /// The status's name on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Authorizing => "authorizing",
            PaymentStatus::Authorized => "authorized",
            PaymentStatus::Declined => "declined",
            PaymentStatus::Captured => "captured",
            PaymentStatus::Voided => "voided",
            PaymentStatus::Refunded => "refunded",
        }
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PaymentStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<PaymentStatus, String> {
        [
            PaymentStatus::Authorizing,
            PaymentStatus::Authorized,
            PaymentStatus::Declined,
            PaymentStatus::Captured,
            PaymentStatus::Voided,
            PaymentStatus::Refunded,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
        .ok_or_else(|| format!("unknown payment status `{s}`"))
    }
}

/// One line of a payment's append-only ledger: what happened, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LedgerEntry {
    /// `authorized`, `declined`, `captured`, `voided` or `refunded`.
    pub kind: String,
    /// The amount concerned.
    pub amount: Money,
    /// Why: the provider's reason, for a decline; for a void the module
    /// made on its own, `authorization_outcome_unknown` (the provider's
    /// answer never came) or `order_voided_before_authorization`.
    pub reason: Option<String>,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// A card payment for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Payment {
    /// The payment.
    pub id: PaymentId,
    /// The order it pays.
    pub order_id: OrderId,
    /// Who pays.
    pub customer_id: Uuid,
    /// What is held or taken.
    pub amount: Money,
    /// Where it stands.
    pub status: PaymentStatus,
    /// The card's last four digits (never more is kept).
    pub card_last4: String,
    /// The provider's reason, when declined.
    pub decline_code: Option<String>,
    /// Every step, oldest first.
    pub ledger: Vec<LedgerEntry>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A card number to tokenize.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tokenize {
    /// 12 to 19 digits (spaces and dashes are ignored).
    #[schema(pattern = r"^[ -]*(?:[0-9][ -]*){12,19}$")]
    pub card_number: String,
}

impl fmt::Debug for Tokenize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A card number never reaches a log line.
        f.debug_struct("Tokenize")
            .field("card_number", &"<redacted>")
            .finish()
    }
}

/// A card as the shop may keep it: the provider's token and the last four digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentMethod {
    /// The provider's token for the card, 1 to 255 characters.
    #[schema(min_length = 1, max_length = 255)]
    pub token: String,
    /// The card's last four digits.
    #[schema(pattern = r"^[0-9]{4}$")]
    pub card_last4: String,
}

/// Hold an amount on a card for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizePayment {
    /// The order; one payment per order.
    pub order_id: OrderId,
    /// Who pays (the payment's owner).
    pub customer_id: Uuid,
    /// How much: more than zero.
    #[serde(deserialize_with = "kernel::json::object")]
    #[schema(value_type = PositiveMoney)]
    pub amount: Money,
    /// The card, as tokenized.
    #[serde(deserialize_with = "kernel::json::object")]
    pub payment_method: PaymentMethod,
}

/// An amount to authorize: `Money` of more than zero (only the schema of
/// `AuthorizePayment.amount`, which is `Money`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"amount_minor": 1299, "currency": "EUR"}))]
pub struct PositiveMoney {
    /// Amount in the currency's minor unit (for EUR, cents); a whole number.
    #[schema(minimum = 1)]
    pub amount_minor: i64,
    /// ISO 4217 alphabetic code.
    pub currency: kernel::Currency,
}
