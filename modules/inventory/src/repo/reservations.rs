//! `reservations` and their lines: an order's hold on stock, opened,
//! moved through its states and claimed when expired.

use catalog_api::Sku;
use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::QueryResult;
use diesel::result::Error as DieselError;
use diesel::sql_types::{BigInt, Integer, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use inventory_api::{OrderId, Reservation, ReservationLine, ReservationStatus};
use uuid::Uuid;

#[derive(diesel::QueryableByName)]
struct ReservationRow {
    #[diesel(sql_type = SqlUuid)]
    order_id: Uuid,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Timestamptz)]
    expires_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
}

#[derive(diesel::QueryableByName)]
struct LineRow {
    #[diesel(sql_type = Text)]
    sku: String,
    #[diesel(sql_type = Integer)]
    quantity: i32,
}

/// The reservation of `order` with its lines in SKU order; `lock` holds
/// its row until the transaction ends.
pub(crate) async fn load_reservation(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    lock: bool,
) -> QueryResult<Option<Reservation>> {
    let sql = format!(
        "SELECT order_id, status, expires_at, created_at FROM reservations WHERE order_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let found: Option<ReservationRow> = db::sql(sql)
        .bind::<SqlUuid, _>(order.as_uuid())
        .get_result(conn)
        .await
        .optional()?;
    let Some(found) = found else { return Ok(None) };
    let lines: Vec<LineRow> =
        db::sql("SELECT sku, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY sku")
            .bind::<SqlUuid, _>(order.as_uuid())
            .load(conn)
            .await?;
    let status = found
        .status
        .parse()
        .map_err(|e: String| DieselError::DeserializationError(e.into()))?;
    let lines = lines
        .into_iter()
        .map(|l| {
            Sku::parse(&l.sku)
                .map(|sku| ReservationLine {
                    sku,
                    quantity: l.quantity,
                })
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
    conn: &mut AsyncPgConnection,
    order: OrderId,
    ttl_secs: i64,
) -> QueryResult<Option<Made>> {
    db::sql(
        "INSERT INTO reservations (order_id, status, expires_at) \
         VALUES ($1, 'active', now() + make_interval(secs => $2::float8)) ON CONFLICT DO NOTHING \
         RETURNING expires_at, created_at",
    )
    .bind::<SqlUuid, _>(order.as_uuid())
    .bind::<BigInt, _>(ttl_secs)
    .get_result(conn)
    .await
    .optional()
}

/// Adds a line to `order`'s reservation (after its stock row moved: the
/// foreign key names a SKU that exists).
pub(crate) async fn insert_line(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    line: &ReservationLine,
) -> QueryResult<()> {
    db::sql("INSERT INTO reservation_lines (order_id, sku, quantity) VALUES ($1, $2, $3)")
        .bind::<SqlUuid, _>(order.as_uuid())
        .bind::<Text, _>(line.sku.as_str())
        .bind::<Integer, _>(line.quantity)
        .execute(conn)
        .await
        .map(drop)
}

/// Sets the status of `order`'s reservation.
pub(crate) async fn set_status(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    status: ReservationStatus,
) -> QueryResult<()> {
    db::sql("UPDATE reservations SET status = $2, updated_at = now() WHERE order_id = $1")
        .bind::<SqlUuid, _>(order.as_uuid())
        .bind::<Text, _>(status.as_str())
        .execute(conn)
        .await
        .map(drop)
}

/// Claims up to 100 active reservations past their time, oldest first,
/// skipping any another instance holds.
pub(crate) async fn claim_expired(conn: &mut AsyncPgConnection) -> QueryResult<Vec<OrderId>> {
    #[derive(diesel::QueryableByName)]
    struct Due {
        #[diesel(sql_type = SqlUuid)]
        order_id: Uuid,
    }
    let due: Vec<Due> = db::sql(
        "SELECT order_id FROM reservations WHERE status = 'active' AND expires_at < now() \
         ORDER BY expires_at LIMIT 100 FOR UPDATE SKIP LOCKED",
    )
    .load(conn)
    .await?;
    Ok(due.into_iter().map(|d| OrderId::from(d.order_id)).collect())
}
