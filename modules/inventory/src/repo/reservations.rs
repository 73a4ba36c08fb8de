//! `reservations` and their lines: an order's hold on stock, opened,
//! moved through its states and claimed when expired. Diesel's query
//! builder, but for the opening and the read with its lines (their
//! reasons are beside them).

use catalog_api::Sku;
use chrono::{DateTime, Utc};
use diesel::dsl::now;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{Array, BigInt, Integer, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use inventory_api::{OrderId, Reservation, ReservationLine, ReservationStatus};
use uuid::Uuid;

diesel::table! {
    inventory.reservations (order_id) {
        order_id -> Uuid,
        status -> Text,
        expires_at -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    inventory.reservation_lines (order_id, sku) {
        order_id -> Uuid,
        sku -> Text,
        quantity -> Integer,
    }
}

/// A reservation with its lines (SKUs and quantities, in SKU order).
#[derive(QueryableByName)]
struct ReservationRow {
    #[diesel(sql_type = SqlUuid)]
    order_id: Uuid,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Timestamptz)]
    expires_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Array<Text>)]
    skus: Vec<String>,
    #[diesel(sql_type = Array<Integer>)]
    quantities: Vec<i32>,
}

/// The reservation of `order` with its lines in SKU order; `lock` holds
/// its row until the transaction ends.
pub(crate) async fn load_reservation(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    lock: bool,
) -> QueryResult<Option<Reservation>> {
    // Raw: the lines come in the same statement as array sub-queries, which
    // the query builder has no form for; `FOR UPDATE` locks the
    // reservation's row only (a join would lock the lines too, and an
    // outer join cannot be locked).
    let found: Option<ReservationRow> = db::sql(format!(
        "SELECT order_id, status, expires_at, created_at, \
         ARRAY(SELECT sku FROM reservation_lines l WHERE l.order_id = r.order_id ORDER BY sku COLLATE \"C\") AS skus, \
         ARRAY(SELECT quantity FROM reservation_lines l WHERE l.order_id = r.order_id ORDER BY sku COLLATE \"C\") AS quantities \
         FROM reservations r WHERE order_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    ))
    .bind::<SqlUuid, _>(order.as_uuid())
    .get_result(conn)
    .await
    .optional()?;
    let Some(found) = found else { return Ok(None) };
    let lines = found
        .skus
        .iter()
        .cloned()
        .zip(found.quantities.iter().copied());
    let status = found
        .status
        .parse()
        .map_err(|e: String| DieselError::DeserializationError(e.into()))?;
    let lines = lines
        .map(|(sku, quantity)| {
            Sku::parse(&sku)
                .map(|sku| ReservationLine { sku, quantity })
                .map_err(|e| DieselError::DeserializationError(Box::new(e)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Reservation {
        order_id: OrderId::from(found.order_id),
        status,
        lines,
        expires_at: found.expires_at,
        created_at: found.created_at,
    }))
}

/// When a new reservation expires, and when it was made.
#[derive(diesel::QueryableByName)]
pub(crate) struct Made {
    #[diesel(sql_type = Timestamptz)]
    pub(crate) expires_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub(crate) created_at: DateTime<Utc>,
}

/// Opens an active reservation for `order`, held for `ttl_secs`; `None`
/// when the order has one already.
pub(crate) async fn insert_reservation(
    mut conn: &AsyncPgConnection,
    order: OrderId,
    ttl_secs: i64,
) -> QueryResult<Option<Made>> {
    // Raw: the expiry is `now() + interval` on the database's clock, which
    // the query builder has no `timestamptz` arithmetic for.
    db::sql(
        "INSERT INTO reservations (order_id, status, expires_at) \
         VALUES ($1, 'active', now() + make_interval(secs => $2::float8)) ON CONFLICT DO NOTHING \
         RETURNING expires_at, created_at",
    )
    .bind::<SqlUuid, _>(order.as_uuid())
    .bind::<BigInt, _>(ttl_secs)
    .get_result(&mut conn)
    .await
    .optional()
}

/// Fences `order` off: a released reservation without lines, for a
/// release that came before its reservation (a reserve still on its way
/// then finds the order released). `false` when the order has a
/// reservation already (made meanwhile: this waited for its commit).
pub(crate) async fn fence(conn: &mut AsyncPgConnection, order: OrderId) -> QueryResult<bool> {
    let made = diesel::insert_into(reservations::table)
        .values((
            reservations::order_id.eq(order.as_uuid()),
            reservations::status.eq(ReservationStatus::Released.as_str()),
            reservations::expires_at.eq(now),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(made == 1)
}

/// Whether `reservation` is a fence ([`fence`]): every reservation made
/// has a line (the contract refuses one without).
pub(crate) fn is_fence(reservation: &Reservation) -> bool {
    reservation.lines.is_empty()
}

/// Adds the lines of `order`'s reservation, in one statement (after their
/// stock rows moved: the foreign key names SKUs that exist).
pub(crate) async fn insert_lines(
    mut conn: &AsyncPgConnection,
    order: OrderId,
    lines: &[ReservationLine],
) -> QueryResult<()> {
    let rows: Vec<_> = lines
        .iter()
        .map(|line| {
            (
                reservation_lines::order_id.eq(order.as_uuid()),
                reservation_lines::sku.eq(line.sku.as_str()),
                reservation_lines::quantity.eq(line.quantity),
            )
        })
        .collect();
    db::cached(diesel::insert_into(reservation_lines::table).values(rows))
        .execute(&mut conn)
        .await
        .map(drop)
}

/// Sets the status of `order`'s reservation.
pub(crate) async fn set_status(
    mut conn: &AsyncPgConnection,
    order: OrderId,
    status: ReservationStatus,
) -> QueryResult<()> {
    db::cached(
        diesel::update(reservations::table.find(order.as_uuid())).set((
            reservations::status.eq(status.as_str()),
            reservations::updated_at.eq(now),
        )),
    )
    .execute(&mut conn)
    .await
    .map(drop)
}

/// Claims the oldest active reservation past its time, skipping any
/// another instance holds and those of `passed_over` (whose expiry failed
/// in this pass: the oldest first, one that keeps failing would be claimed
/// again and again, and no other would expire); `None` when none is due.
pub(crate) async fn claim_expired(
    conn: &mut AsyncPgConnection,
    passed_over: &[Uuid],
) -> QueryResult<Option<OrderId>> {
    let due: Option<Uuid> = reservations::table
        .filter(reservations::status.eq(ReservationStatus::Active.as_str()))
        .filter(reservations::expires_at.lt(now))
        .filter(reservations::order_id.ne_all(passed_over.to_vec()))
        .order(reservations::expires_at)
        .select(reservations::order_id)
        .for_update()
        .skip_locked()
        .first(conn)
        .await
        .optional()?;
    Ok(due.map(OrderId::from))
}
