//! Stock levels, movements and reservations.

use catalog_api::Sku;
use chrono::{DateTime, Utc};
use kernel::{Cursor, PageLimit};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub use kernel::OrderId;

/// Stock of one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StockLevel {
    /// The SKU.
    pub sku: Sku,
    /// Units in the warehouse.
    pub on_hand: i32,
    /// Units held by active reservations.
    pub reserved: i32,
    /// `on_hand - reserved`: what can still be reserved.
    pub available: i32,
    /// At or below this many available units the SKU is "low".
    pub low_stock_threshold: i32,
    /// Last change (`null` for a SKU never stocked).
    pub updated_at: Option<DateTime<Utc>>,
}

/// A change of on-hand stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"quantity": 10, "reason": "receive"}))]
pub struct Adjustment {
    /// Units added (positive: receiving) or removed (negative: corrections,
    /// never below what is reserved). Not zero, at most 1000000 either way.
    #[serde(deserialize_with = "kernel::json::whole")]
    #[schema(schema_with = adjustment_quantity)]
    pub quantity: i32,
    /// Why, for the history: `receive`, `count`, `damage` ... (1 to 200
    /// characters not counting surrounding whitespace).
    #[schema(
        pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[\s\S]{0,198}[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub reason: String,
    /// A new low-stock threshold for the SKU, if it changes.
    #[serde(default, deserialize_with = "kernel::json::whole_option")]
    #[schema(minimum = 0)]
    pub low_stock_threshold: Option<i32>,
    /// The caller's idempotency key ([`valid_idempotency_key`]): the
    /// adjustment asked again with it (its answer was lost) is not made
    /// again, and the key with another quantity or reason is refused (a
    /// `low_stock_threshold` is not compared: a repeat changes nothing). A
    /// key is the SKU's own. Over HTTP it is the `Idempotency-Key` header,
    /// as for `POST /orders`, never a field of the body.
    #[serde(skip)]
    pub idempotency_key: Option<String>,
}

/// Whether `key` is an `Idempotency-Key` as `POST /orders` takes it: 1 to
/// 255 visible ASCII characters (a UUID, say). Checked by the client
/// before sending too: a key that is no header value would fail the call,
/// not be refused as the module refuses it.
pub fn valid_idempotency_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Most units one adjustment or reservation line moves.
pub const MAX_QUANTITY: i32 = 1_000_000;

/// `quantity` of an [`Adjustment`]: from -1000000 to 1000000, not zero.
fn adjustment_quantity() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{
        AnyOfBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
    };
    let range = |min: i32, max: i32| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
            .minimum(Some(min))
            .maximum(Some(max))
    };
    let quantity = AnyOfBuilder::new()
        .item(range(1, MAX_QUANTITY))
        .item(range(-MAX_QUANTITY, -1))
        .description(Some(
            "Units added (positive: receiving) or removed (negative: corrections, never \
             below what is reserved). Not zero, at most 1000000 either way.",
        ))
        .build();
    Schema::AnyOf(quantity).into()
}

/// One entry of a SKU's stock history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Movement {
    /// Movement id.
    pub id: Uuid,
    /// `adjustment`, `reservation`, `release`, `expiry`, `sale` or `return`.
    pub kind: String,
    /// Change of the counted quantity: on hand for adjustments and returns;
    /// reserved for reservations, releases and expiries; both for sales
    /// (the units leave the shelf and are no longer held).
    pub quantity: i32,
    /// The adjustment's reason, if any.
    pub reason: Option<String>,
    /// The order, for reservation movements.
    pub order_id: Option<OrderId>,
    /// On hand after the movement.
    pub on_hand_after: i32,
    /// Reserved after the movement.
    pub reserved_after: i32,
    /// When it happened.
    pub created_at: DateTime<Utc>,
}

/// Which page of movements to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListMovements {
    /// Most movements on one page.
    pub limit: PageLimit,
    /// Where the previous page ended.
    pub cursor: Option<Cursor>,
}

/// One line of a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationLine {
    /// The SKU.
    pub sku: Sku,
    /// Units, 1 to 1000000.
    #[serde(deserialize_with = "kernel::json::whole")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub quantity: i32,
}

/// A request to hold stock for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveStock {
    /// The order; reserving again for it returns the same reservation.
    pub order_id: OrderId,
    /// What to hold: 1 to 100 lines, each SKU at most once.
    #[serde(deserialize_with = "kernel::json::objects")]
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<ReservationLine>,
}

/// Where a reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReservationStatus {
    /// Holding stock.
    Active,
    /// Turned into a sale.
    Committed,
    /// Given back.
    Released,
    /// Given back by the expiry job.
    Expired,
    /// Sold, then put back on the shelf (the order was cancelled after
    /// the sale).
    Returned,
}

impl ReservationStatus {
    /// The status as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Active => "active",
            ReservationStatus::Committed => "committed",
            ReservationStatus::Released => "released",
            ReservationStatus::Expired => "expired",
            ReservationStatus::Returned => "returned",
        }
    }
}

impl std::str::FromStr for ReservationStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<ReservationStatus, String> {
        match s {
            "active" => Ok(ReservationStatus::Active),
            "committed" => Ok(ReservationStatus::Committed),
            "released" => Ok(ReservationStatus::Released),
            "returned" => Ok(ReservationStatus::Returned),
            "expired" => Ok(ReservationStatus::Expired),
            other => Err(format!("unknown reservation status `{other}`")),
        }
    }
}

/// Stock held for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reservation {
    /// The order.
    pub order_id: OrderId,
    /// Where it stands.
    pub status: ReservationStatus,
    /// What is held, by SKU.
    pub lines: Vec<ReservationLine>,
    /// When an active reservation gives its stock back by itself.
    pub expires_at: DateTime<Utc>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}
