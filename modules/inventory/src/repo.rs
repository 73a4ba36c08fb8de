//! All of the inventory's SQL: `stock`, its append-only `movements`, and
//! `reservations` with their lines. Functions take a connection so the
//! service runs several in one transaction.
//!
//! Every stock change is raw SQL (`db::sql`, prepared once per connection):
//! a conditional `UPDATE ... RETURNING` fused with the INSERT of its
//! movement in one CTE, which diesel's query builder cannot express, so the
//! row is locked for one round trip only; a reservation's line also writes
//! its `StockChanged` event in that statement ([`move_line`]). Each also
//! keeps the SKU's stock alert ([`alert_set`]) in its `UPDATE`, and returns
//! whether the move raised one. The reads and plain writes use the query
//! builder.

use catalog_api::Sku;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use inventory_api::{Movement, OrderId, ReservationLine, StockLevel};
use uuid::Uuid;

use crate::domain::Alert;

mod reservations;

pub(crate) use reservations::{
    claim_expired, fence, insert_lines, insert_reservation, is_fence, load_reservation, set_status,
};

diesel::table! {
    inventory.stock (sku) {
        sku -> Text,
        on_hand -> Integer,
        reserved -> Integer,
        low_stock_threshold -> Integer,
        updated_at -> Timestamptz,
        version -> BigInt,
        alerted -> Text,
        alerted_version -> BigInt,
    }
}

diesel::table! {
    inventory.movements (id) {
        id -> Uuid,
        sku -> Text,
        kind -> Text,
        quantity -> Integer,
        reason -> Nullable<Text>,
        order_id -> Nullable<Uuid>,
        on_hand_after -> Integer,
        reserved_after -> Integer,
        created_at -> Timestamptz,
        idempotency_key -> Nullable<Text>,
    }
}

/// The unique index by which one `Idempotency-Key` makes at most one
/// movement of a SKU.
pub(crate) const ADJUSTMENT_KEY_UNIQUE: &str = "movements_idempotency_key_idx";

/// A row of `stock`.
#[derive(diesel::QueryableByName, Queryable, Selectable, Clone)]
#[diesel(table_name = stock)]
pub(crate) struct Row {
    #[diesel(sql_type = Text)]
    pub(crate) sku: String,
    #[diesel(sql_type = Integer)]
    pub(crate) on_hand: i32,
    #[diesel(sql_type = Integer)]
    pub(crate) reserved: i32,
    #[diesel(sql_type = Integer)]
    pub(crate) low_stock_threshold: i32,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
    /// One up with every movement: the order of the row's states, which its
    /// events carry (they may be delivered out of order).
    #[diesel(sql_type = BigInt)]
    pub(crate) version: i64,
    /// The stock alert the SKU raised last (`domain::Alert`, stored as its
    /// name): `none` until a fall raises one, and again once units brought
    /// in leave more than the threshold available.
    #[diesel(sql_type = Text)]
    alerted: String,
    /// The `version` of the move that raised `alerted` (0: none did, or
    /// before it was kept).
    #[diesel(sql_type = BigInt)]
    alerted_version: i64,
}

impl Row {
    /// Units on hand and not reserved.
    pub(crate) fn available(&self) -> i32 {
        self.on_hand - self.reserved
    }

    /// The row as the contract's DTO.
    pub(crate) fn into_level(self) -> Result<StockLevel, String> {
        Ok(StockLevel {
            available: self.available(),
            sku: Sku::parse(&self.sku).map_err(|e| format!("stored SKU: {e}"))?,
            on_hand: self.on_hand,
            reserved: self.reserved,
            low_stock_threshold: self.low_stock_threshold,
            updated_at: Some(self.updated_at),
        })
    }

    /// The alert raised by the move that returned this row: its `alerted`
    /// when that move set it (`alerted_version` is then the row's new
    /// `version`), else `Alert::None`. `Err` for a stored name no `Alert`
    /// has (the column's CHECK allows none).
    pub(crate) fn raised(&self) -> Result<Alert, String> {
        if self.alerted_version != self.version {
            return Ok(Alert::None);
        }
        Alert::parse(&self.alerted).ok_or_else(|| format!("stored alert: {:?}", self.alerted))
    }
}

const STOCK_COLUMNS: &str =
    "sku, on_hand, reserved, low_stock_threshold, updated_at, version, alerted, alerted_version";

/// The `SET` clauses that keep a SKU's stock alert with a move that leaves
/// `available` units available under a low-stock `threshold` (both SQL over
/// the row as it was, as every `SET` expression reads it; the move also
/// sets `version = version + 1`), by the rule of [`Alert`]: at zero,
/// `out`; at the threshold or below, `low`, or `out` if it was and the move
/// `brings_in` no units (an adjustment does); above it,
/// `none` if the move brings units in, else as it was. `alerted_version`
/// becomes the new version when that raises an alert: from `none` to `low`
/// or `out`, or from `low` to `out`; moves that keep the alert, set it back
/// or take it from `out` to `low` leave it. In the `UPDATE`, under the
/// row's lock: two moves can never both raise the one alert, and no round
/// trip is added to read what was raised before.
fn alert_set(available: &str, threshold: &str, brings_in: bool) -> String {
    let alerted = if brings_in {
        format!(
            "CASE WHEN {available} > {threshold} THEN 'none' \
             WHEN {available} = 0 THEN 'out' ELSE 'low' END"
        )
    } else {
        format!(
            "CASE WHEN {available} > {threshold} THEN alerted \
             WHEN {available} = 0 OR alerted = 'out' THEN 'out' ELSE 'low' END"
        )
    };
    format!(
        "alerted = {alerted}, \
         alerted_version = CASE WHEN {available} <= {threshold} AND alerted <> 'out' \
         AND (alerted = 'none' OR {available} = 0) THEN version + 1 ELSE alerted_version END"
    )
}

/// How one line moves a stock row; each kind is the movement it records.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineMove {
    /// Hold units, only if that many are available (`reservation`).
    Reserve,
    /// Take reserved units off hand: a sale (`sale`).
    Sale,
    /// Put sold units back on hand (`return`).
    Return,
    /// Let reserved units go (`release`).
    Release,
    /// Let reserved units go, past their time (`expiry`).
    Expiry,
}

impl LineMove {
    /// What the move sets, the condition it moves the row on, and the units
    /// available after it (SQL over the row before it, for [`alert_set`]).
    fn set_and_guard(self) -> (&'static str, &'static str, &'static str) {
        match self {
            LineMove::Reserve => (
                "reserved = reserved + $2",
                " AND on_hand - reserved >= $2",
                "on_hand - reserved - $2",
            ),
            LineMove::Sale => (
                "on_hand = on_hand - $2, reserved = reserved - $2",
                "",
                "on_hand - reserved",
            ),
            // Only while the column can hold the sum (else no row: the
            // caller refuses, instead of the database's overflow error).
            LineMove::Return => (
                "on_hand = on_hand + $2",
                " AND on_hand <= 2147483647 - $2",
                "on_hand + $2 - reserved",
            ),
            LineMove::Release | LineMove::Expiry => {
                ("reserved = reserved - $2", "", "on_hand - reserved + $2")
            }
        }
    }

    fn kind(self) -> &'static str {
        match self {
            LineMove::Reserve => "reservation",
            LineMove::Sale => "sale",
            LineMove::Return => "return",
            LineMove::Release => "release",
            LineMove::Expiry => "expiry",
        }
    }

    /// The movement's signed quantity for a line of `quantity` units.
    fn signed(self, quantity: i32) -> i32 {
        match self {
            LineMove::Reserve | LineMove::Return => quantity,
            LineMove::Sale | LineMove::Release | LineMove::Expiry => -quantity,
        }
    }
}

/// `update`, an `UPDATE stock ... RETURNING {STOCK_COLUMNS}` with two
/// parameters (SKU, quantity), and the movement it makes, in one statement
/// (one round trip while the stock row is locked). The movement's id, kind,
/// quantity, reason and order are bound after the update's own parameters;
/// its idempotency key is `key` (a parameter, or `NULL`); `also` adds more
/// CTEs over `s` (or nothing), bound after those.
fn with_movement(update: &str, key: &str, also: &str) -> String {
    format!(
        "WITH s AS ({update}), m AS (INSERT INTO movements \
         (id, sku, kind, quantity, reason, order_id, idempotency_key, on_hand_after, reserved_after) \
         SELECT $3, sku, $4, $5, $6, $7, {key}, on_hand, reserved FROM s){also} \
         SELECT {STOCK_COLUMNS} FROM s"
    )
}

/// Moves one line of an order's reservation, records the movement and
/// writes `changed`, the line's `inventory.stock_changed.v1` event
/// (prepared without its payload), into the outbox with the row's new
/// figures, all in one statement: the stock row, which every checkout of a
/// best-selling SKU waits for, is then held only by this statement and the
/// commit (writing the event after it took one more round trip). The
/// payload is built by SQL as serde builds `StockChanged` (a test compares
/// them). The row returned says whether the move raised a low- or
/// out-of-stock alert ([`Row::raised`]), which the caller writes (only
/// then: one statement more). `None`, and no event, when a
/// [`LineMove::Reserve`] finds too few units available, a
/// [`LineMove::Return`] would put more units on hand than the column
/// holds, or the SKU was never stocked.
pub(crate) async fn move_line(
    mut conn: &AsyncPgConnection,
    order: OrderId,
    line: &ReservationLine,
    how: LineMove,
    changed: &events::outbox::Prepared,
) -> QueryResult<Option<Row>> {
    let (set, guard, available) = how.set_and_guard();
    // A return (a restock) puts back what a sale of the order took: it
    // undoes a fall told already, as a release does, and re-arms nothing.
    let alert = alert_set(available, "low_stock_threshold", false);
    let envelope = changed.envelope()?;
    // Raw: the update, its movement and its event in one CTE (see the
    // module doc).
    db::sql(with_movement(
        &format!(
            "UPDATE stock SET {set}, {alert}, updated_at = now(), version = version + 1 \
             WHERE sku = $1{guard} RETURNING {STOCK_COLUMNS}"
        ),
        "NULL",
        ", e AS (INSERT INTO outbox (id, event_type, aggregate_id, envelope) \
         SELECT $8, $9, $10, jsonb_set($11, '{payload}', jsonb_build_object(\
         'sku', sku, 'on_hand', on_hand, 'reserved', reserved, 'available', on_hand - reserved, \
         'low_stock_threshold', low_stock_threshold, 'version', version)) FROM s)",
    ))
    .bind::<Text, _>(line.sku.as_str())
    .bind::<Integer, _>(line.quantity)
    .bind::<SqlUuid, _>(Uuid::now_v7())
    .bind::<Text, _>(how.kind())
    .bind::<Integer, _>(how.signed(line.quantity))
    .bind::<Nullable<Text>, _>(None::<&str>)
    .bind::<Nullable<SqlUuid>, _>(Some(order.as_uuid()))
    .bind::<SqlUuid, _>(changed.id())
    .bind::<Text, _>(changed.event_type())
    .bind::<Text, _>(changed.aggregate_id())
    .bind::<Jsonb, _>(envelope)
    .get_result(&mut conn)
    .await
    .optional()
}

/// The stock row of `sku`, if it was ever stocked.
pub(crate) async fn find_stock(
    conn: &mut AsyncPgConnection,
    sku: &Sku,
) -> QueryResult<Option<Row>> {
    stock::table
        .find(sku.as_str())
        .select(Row::as_select())
        .first(conn)
        .await
        .optional()
}

/// The stock row of `sku`, locked; created empty with `default_threshold`
/// if the SKU was never stocked (its alert `none`: one received at or
/// below its threshold raises low stock, as a SKU going down does).
pub(crate) async fn lock_stock(
    conn: &mut AsyncPgConnection,
    sku: &Sku,
    default_threshold: i32,
) -> QueryResult<Row> {
    diesel::insert_into(stock::table)
        .values((
            stock::sku.eq(sku.as_str()),
            stock::on_hand.eq(0),
            stock::low_stock_threshold.eq(default_threshold),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    stock::table
        .find(sku.as_str())
        .select(Row::as_select())
        .for_update()
        .first(conn)
        .await
}

/// Adds `quantity` (negative: removes) to what is on hand and records the
/// movement with its `reason` and the caller's idempotency `key`, and keeps
/// the stock alert with the new figures and threshold ([`alert_set`]: one
/// that leaves more than the threshold available sets it back, so the
/// next fall alerts again); `None`, changing nothing, when fewer than the
/// reserved units would be left. A key this SKU's stock was adjusted with
/// already fails the statement ([`ADJUSTMENT_KEY_UNIQUE`]).
pub(crate) async fn adjust(
    conn: &mut AsyncPgConnection,
    sku: &Sku,
    quantity: i32,
    low_stock_threshold: Option<i32>,
    reason: &str,
    key: Option<&str>,
) -> QueryResult<Option<Row>> {
    let alert = alert_set(
        "on_hand + $2 - reserved",
        "COALESCE($8, low_stock_threshold)",
        true,
    );
    // Raw: the update and its movement in one CTE (see the module doc).
    db::sql(with_movement(
        &format!(
            "UPDATE stock SET on_hand = on_hand + $2, \
         low_stock_threshold = COALESCE($8, low_stock_threshold), {alert}, updated_at = now(), \
         version = version + 1 \
         WHERE sku = $1 AND on_hand + $2 - reserved >= 0 RETURNING {STOCK_COLUMNS}"
        ),
        "$9",
        "",
    ))
    .bind::<Text, _>(sku.as_str())
    .bind::<Integer, _>(quantity)
    .bind::<SqlUuid, _>(Uuid::now_v7())
    .bind::<Text, _>("adjustment")
    .bind::<Integer, _>(quantity)
    .bind::<Nullable<Text>, _>(Some(reason))
    .bind::<Nullable<SqlUuid>, _>(None::<Uuid>)
    .bind::<Nullable<Integer>, _>(low_stock_threshold)
    .bind::<Nullable<Text>, _>(key)
    .get_result(conn)
    .await
    .optional()
}

/// The quantity and reason of the adjustment made of `sku`'s stock under
/// the idempotency `key`, if one was.
pub(crate) async fn keyed_adjustment(
    conn: &mut AsyncPgConnection,
    sku: &Sku,
    key: &str,
) -> QueryResult<Option<(i32, Option<String>)>> {
    movements::table
        .filter(movements::sku.eq(sku.as_str()))
        .filter(movements::idempotency_key.eq(key))
        .select((movements::quantity, movements::reason))
        .first(conn)
        .await
        .optional()
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = movements)]
struct MovementRow {
    id: Uuid,
    kind: String,
    quantity: i32,
    reason: Option<String>,
    order_id: Option<Uuid>,
    on_hand_after: i32,
    reserved_after: i32,
    created_at: DateTime<Utc>,
}

/// Up to `limit` movements of `sku`, newest first, older than `before`.
pub(crate) async fn movements(
    conn: &mut AsyncPgConnection,
    sku: &Sku,
    before: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<Movement>> {
    let mut query = movements::table
        .filter(movements::sku.eq(sku.as_str()))
        .order(movements::id.desc())
        .limit(limit)
        .select(MovementRow::as_select())
        .into_boxed();
    if let Some(before) = before {
        query = query.filter(movements::id.lt(before));
    }
    let rows: Vec<MovementRow> = query.load(conn).await?;
    Ok(rows
        .into_iter()
        .map(|m| Movement {
            id: m.id,
            kind: m.kind,
            quantity: m.quantity,
            reason: m.reason,
            order_id: m.order_id.map(OrderId::from),
            on_hand_after: m.on_hand_after,
            reserved_after: m.reserved_after,
            created_at: m.created_at,
        })
        .collect())
}
