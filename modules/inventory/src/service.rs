//! [`InventoryModule`]: the in-process implementation of [`InventoryApi`].

use std::time::Duration;

use catalog_api::Sku;
use chrono::{DateTime, Utc};
use db::{Pool, PoolError};
use diesel::OptionalExtension as _;
use diesel::result::Error as DieselError;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use inventory_api::events::{LowStock, OutOfStock, StockChanged};
use inventory_api::{
    Adjustment, InventoryApi, InventoryError, ListMovements, Movement, OrderId, Reservation,
    ReservationLine, ReservationStatus, ReserveStock, StockLevel,
};
use kernel::{CallContext, Cursor, FieldError, Page, Role};
use tokio::sync::watch;
use uuid::Uuid;

use crate::Settings;

/// Most lines in one reservation.
const MAX_LINES: usize = 100;
/// Largest quantity of one line or adjustment.
const MAX_QUANTITY: i32 = 1_000_000;

/// The inventory, served from this process's database pool.
#[derive(Clone)]
pub struct InventoryModule {
    pool: Pool,
    settings: Settings,
}

#[derive(diesel::QueryableByName, Clone)]
struct Row {
    #[diesel(sql_type = Text)]
    sku: String,
    #[diesel(sql_type = Integer)]
    on_hand: i32,
    #[diesel(sql_type = Integer)]
    reserved: i32,
    #[diesel(sql_type = Integer)]
    low_stock_threshold: i32,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
}

impl Row {
    fn available(&self) -> i32 {
        self.on_hand - self.reserved
    }
}

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

#[derive(diesel::QueryableByName)]
struct MovementRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Integer)]
    quantity: i32,
    #[diesel(sql_type = Nullable<Text>)]
    reason: Option<String>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    order_id: Option<Uuid>,
    #[diesel(sql_type = Integer)]
    on_hand_after: i32,
    #[diesel(sql_type = Integer)]
    reserved_after: i32,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
}

/// Why a transaction ended without committing.
enum Abort {
    Insufficient(Vec<String>),
    Fail(InventoryError),
    Db(DieselError),
}

impl From<DieselError> for Abort {
    fn from(e: DieselError) -> Abort {
        Abort::Db(e)
    }
}

fn unavailable(error: PoolError) -> InventoryError {
    tracing::warn!(error = %error, "inventory database unavailable");
    InventoryError::Unavailable("the inventory database is unavailable".to_owned())
}

fn database(error: DieselError) -> InventoryError {
    match db::unavailable_reason(&error) {
        Some(reason) => InventoryError::Unavailable(format!("the inventory database {reason}")),
        None => InventoryError::Unexpected(format!("inventory database error: {error}")),
    }
}

fn abort(a: Abort) -> InventoryError {
    match a {
        Abort::Insufficient(skus) => InventoryError::InsufficientStock(skus),
        Abort::Fail(e) => e,
        Abort::Db(e) => database(e),
    }
}

fn require_admin(cx: &CallContext) -> Result<(), InventoryError> {
    match cx.caller() {
        None => Err(InventoryError::Unauthenticated),
        Some(c) if !c.has(Role::Admin) => Err(InventoryError::Forbidden),
        Some(_) => Ok(()),
    }
}

/// Reservations are also made by the order module, as the `service` role.
fn require_admin_or_service(cx: &CallContext) -> Result<(), InventoryError> {
    match cx.caller() {
        None => Err(InventoryError::Unauthenticated),
        Some(c) if !c.is_admin_or_service() => Err(InventoryError::Forbidden),
        Some(_) => Ok(()),
    }
}

fn to_level(row: Row) -> Result<StockLevel, InventoryError> {
    Ok(StockLevel {
        available: row.available(),
        sku: Sku::parse(&row.sku)
            .map_err(|e| InventoryError::Unexpected(format!("stored SKU: {e}")))?,
        on_hand: row.on_hand,
        reserved: row.reserved,
        low_stock_threshold: row.low_stock_threshold,
        updated_at: Some(row.updated_at),
    })
}

const STOCK_COLUMNS: &str = "sku, on_hand, reserved, low_stock_threshold, updated_at";

/// What a movement records besides the counts.
/// What a caller asks of a reservation.
#[derive(Clone, Copy)]
enum Transition {
    /// Active → committed: a sale.
    Commit,
    /// Active → released: the stock back.
    Release,
    /// Committed → returned: the sale put back.
    Restock,
}

/// How [`InventoryModule::settle_lines`] moves a reservation's units.
#[derive(Clone, Copy)]
enum LinesMove {
    /// Committed: sold.
    Sale,
    /// Restocked: a sale put back.
    Return,
}

struct Change<'a> {
    kind: &'a str,
    quantity: i32,
    reason: Option<&'a str>,
    order: Option<OrderId>,
}

/// Records a movement and publishes what the change means (stock changed,
/// and low or out of stock when available crosses the threshold or zero).
async fn after_change(
    conn: &mut AsyncPgConnection,
    cx: &CallContext,
    before: Option<&Row>,
    after: &Row,
    change: Change<'_>,
) -> Result<(), Abort> {
    let Change {
        kind,
        quantity,
        reason,
        order,
    } = change;
    db::sql(
        "INSERT INTO movements (id, sku, kind, quantity, reason, order_id, on_hand_after, reserved_after) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind::<SqlUuid, _>(Uuid::now_v7())
    .bind::<Text, _>(&after.sku)
    .bind::<Text, _>(kind)
    .bind::<Integer, _>(quantity)
    .bind::<Nullable<Text>, _>(reason)
    .bind::<Nullable<SqlUuid>, _>(order.map(|o| o.as_uuid()))
    .bind::<Integer, _>(after.on_hand)
    .bind::<Integer, _>(after.reserved)
    .execute(conn)
    .await?;
    announce_change(conn, cx, before, after).await
}

/// `update`, an `UPDATE stock ... RETURNING {STOCK_COLUMNS}` with `binds`
/// parameters, and the movement it makes, in one statement (one round trip
/// while the stock row is locked). Bind after the update's own parameters:
/// the movement's id, kind, quantity, reason and order.
fn with_movement(update: &str, binds: usize) -> String {
    let [id, kind, quantity, reason, order] = [1, 2, 3, 4, 5].map(|i| binds + i);
    format!(
        "WITH s AS ({update}), m AS (INSERT INTO movements \
         (id, sku, kind, quantity, reason, order_id, on_hand_after, reserved_after) \
         SELECT ${id}, sku, ${kind}, ${quantity}, ${reason}, ${order}, on_hand, reserved FROM s) \
         SELECT {STOCK_COLUMNS} FROM s"
    )
}

/// Publishes what a stock change means (stock changed, and low or out of
/// stock when available crosses the threshold or zero); the movement is
/// written already.
async fn announce_change(
    conn: &mut AsyncPgConnection,
    cx: &CallContext,
    before: Option<&Row>,
    after: &Row,
) -> Result<(), Abort> {
    let sku = Sku::parse(&after.sku)
        .map_err(|e| Abort::Fail(InventoryError::Unexpected(e.to_string())))?;
    let changed = StockChanged {
        sku: sku.clone(),
        on_hand: after.on_hand,
        reserved: after.reserved,
        available: after.available(),
        low_stock_threshold: Some(after.low_stock_threshold),
    };
    events::outbox::publish(conn, crate::NAME, cx, &changed).await?;
    let was = before.map_or(0, Row::available);
    let now = after.available();
    let threshold = after.low_stock_threshold;
    if was > 0 && now == 0 {
        events::outbox::publish(conn, crate::NAME, cx, &OutOfStock { sku }).await?;
    } else if now > 0 && now <= threshold && (was > threshold || before.is_none()) {
        events::outbox::publish(
            conn,
            crate::NAME,
            cx,
            &LowStock {
                sku,
                available: now,
                threshold,
            },
        )
        .await?;
    }
    Ok(())
}

fn check_adjustment(adjustment: &Adjustment) -> Result<(), InventoryError> {
    let mut errors = Vec::new();
    if adjustment.quantity == 0 || adjustment.quantity.abs() > MAX_QUANTITY {
        errors.push(FieldError::new(
            "quantity",
            format!("must be non-zero and at most {MAX_QUANTITY} either way"),
        ));
    }
    let reason = adjustment.reason.trim().chars().count();
    if reason == 0 || reason > 200 {
        errors.push(FieldError::new("reason", "must be 1 to 200 characters"));
    }
    if adjustment.low_stock_threshold.is_some_and(|t| t < 0) {
        errors.push(FieldError::new(
            "low_stock_threshold",
            "must not be negative",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(InventoryError::Validation(errors))
    }
}

/// Checks a reservation request; returns its lines sorted by SKU (the
/// order rows are locked in, so concurrent reservations cannot deadlock).
fn check_reservation(request: &ReserveStock) -> Result<Vec<ReservationLine>, InventoryError> {
    let mut errors = Vec::new();
    if request.lines.is_empty() || request.lines.len() > MAX_LINES {
        errors.push(FieldError::new(
            "lines",
            format!("must hold 1 to {MAX_LINES} lines"),
        ));
    }
    for (i, line) in request.lines.iter().enumerate() {
        if line.quantity < 1 || line.quantity > MAX_QUANTITY {
            errors.push(FieldError::new(
                format!("lines[{i}].quantity"),
                format!("must be 1 to {MAX_QUANTITY}"),
            ));
        }
    }
    let mut lines = request.lines.clone();
    lines.sort_by(|a, b| a.sku.as_str().cmp(b.sku.as_str()));
    if lines.windows(2).any(|w| w[0].sku == w[1].sku) {
        errors.push(FieldError::new("lines", "name each SKU once"));
    }
    if errors.is_empty() {
        Ok(lines)
    } else {
        Err(InventoryError::Validation(errors))
    }
}

impl InventoryModule {
    /// The inventory over its own pool.
    pub fn new(pool: Pool, settings: Settings) -> InventoryModule {
        InventoryModule { pool, settings }
    }

    async fn conn(&self) -> Result<db::Object, InventoryError> {
        db::connection(&self.pool, crate::NAME)
            .await
            .map_err(unavailable)
    }

    async fn load_reservation(
        conn: &mut AsyncPgConnection,
        order: OrderId,
        lock: bool,
    ) -> Result<Option<Reservation>, DieselError> {
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

    /// Moves every line of a reservation in SKU order (rows locked one by
    /// one, as reservations lock them), records the movements, and sets the
    /// reservation's new status: a sale takes the reserved units off hand; a
    /// return puts sold units back on hand.
    async fn settle_lines(
        conn: &mut AsyncPgConnection,
        cx: &CallContext,
        reservation: &Reservation,
        how: LinesMove,
    ) -> Result<(), Abort> {
        let (update, kind, sign, status) = match how {
            LinesMove::Sale => (
                "on_hand = on_hand - $2, reserved = reserved - $2",
                "sale",
                -1,
                ReservationStatus::Committed,
            ),
            LinesMove::Return => (
                "on_hand = on_hand + $2",
                "return",
                1,
                ReservationStatus::Returned,
            ),
        };
        let order = reservation.order_id;
        // The reservation row is locked already; the stock rows are locked
        // last, each by its UPDATE, so they are held for as short a time as
        // possible (a best-selling SKU's row is every checkout's).
        db::sql("UPDATE reservations SET status = $2, updated_at = now() WHERE order_id = $1")
            .bind::<SqlUuid, _>(order.as_uuid())
            .bind::<Text, _>(status.as_str())
            .execute(conn)
            .await?;
        for line in &reservation.lines {
            let after: Row = db::sql(with_movement(
                &format!(
                    "UPDATE stock SET {update}, updated_at = now() WHERE sku = $1 RETURNING {STOCK_COLUMNS}"
                ),
                2,
            ))
            .bind::<Text, _>(line.sku.as_str())
            .bind::<Integer, _>(line.quantity)
            .bind::<SqlUuid, _>(Uuid::now_v7())
            .bind::<Text, _>(kind)
            .bind::<Integer, _>(sign * line.quantity)
            .bind::<Nullable<Text>, _>(None::<&str>)
            .bind::<Nullable<SqlUuid>, _>(Some(order.as_uuid()))
            .get_result(conn)
            .await?;
            // The row as it was: the UPDATE moved it by exactly this much.
            let mut before = after.clone();
            match how {
                LinesMove::Sale => {
                    before.on_hand += line.quantity;
                    before.reserved += line.quantity;
                }
                LinesMove::Return => before.on_hand -= line.quantity,
            }
            announce_change(conn, cx, Some(&before), &after).await?;
        }
        Ok(())
    }

    /// Moves a reservation on (see [`Transition`]) under its row lock. A
    /// reservation already where the move leads is answered as it is
    /// (idempotent); one in any other state is refused.
    async fn transition(
        &self,
        cx: &CallContext,
        order: OrderId,
        to: Transition,
    ) -> Result<Reservation, InventoryError> {
        require_admin_or_service(cx)?;
        let (from, done): (_, &[ReservationStatus]) = match to {
            Transition::Commit => (ReservationStatus::Active, &[ReservationStatus::Committed]),
            Transition::Release => (
                ReservationStatus::Active,
                &[ReservationStatus::Released, ReservationStatus::Expired],
            ),
            Transition::Restock => (ReservationStatus::Committed, &[ReservationStatus::Returned]),
        };
        let mut conn = self.conn().await?;
        conn.transaction::<_, Abort, _>(async |conn| {
            let reservation = Self::load_reservation(conn, order, true)
                .await?
                .ok_or(Abort::Fail(InventoryError::ReservationNotFound(order)))?;
            if done.contains(&reservation.status) {
                return Ok(reservation);
            }
            if reservation.status != from {
                return Err(Abort::Fail(InventoryError::InvalidTransition {
                    order,
                    status: reservation.status,
                }));
            }
            let status = match to {
                Transition::Commit => {
                    Self::settle_lines(conn, cx, &reservation, LinesMove::Sale).await?;
                    ReservationStatus::Committed
                }
                Transition::Restock => {
                    Self::settle_lines(conn, cx, &reservation, LinesMove::Return).await?;
                    ReservationStatus::Returned
                }
                Transition::Release => {
                    Self::give_back(conn, cx, &reservation, ReservationStatus::Released).await?;
                    ReservationStatus::Released
                }
            };
            Ok(Reservation {
                status,
                ..reservation
            })
        })
        .await
        .map_err(abort)
        .inspect(|_| events::outbox::wake(crate::NAME))
    }

    /// Gives an active reservation's stock back with `status` (`released` or
    /// `expired`), inside the caller's transaction.
    async fn give_back(
        conn: &mut AsyncPgConnection,
        cx: &CallContext,
        reservation: &Reservation,
        status: ReservationStatus,
    ) -> Result<(), Abort> {
        let kind = if status == ReservationStatus::Expired {
            "expiry"
        } else {
            "release"
        };
        db::sql("UPDATE reservations SET status = $2, updated_at = now() WHERE order_id = $1")
            .bind::<SqlUuid, _>(reservation.order_id.as_uuid())
            .bind::<Text, _>(status.as_str())
            .execute(conn)
            .await?;
        // Stock rows last (see `settle_lines`).
        for line in &reservation.lines {
            let after: Row = db::sql(with_movement(
                &format!(
                    "UPDATE stock SET reserved = reserved - $2, updated_at = now() WHERE sku = $1 RETURNING {STOCK_COLUMNS}"
                ),
                2,
            ))
            .bind::<Text, _>(line.sku.as_str())
            .bind::<Integer, _>(line.quantity)
            .bind::<SqlUuid, _>(Uuid::now_v7())
            .bind::<Text, _>(kind)
            .bind::<Integer, _>(-line.quantity)
            .bind::<Nullable<Text>, _>(None::<&str>)
            .bind::<Nullable<SqlUuid>, _>(Some(reservation.order_id.as_uuid()))
            .get_result(conn)
            .await?;
            let mut before = after.clone();
            before.reserved += line.quantity;
            announce_change(conn, cx, Some(&before), &after).await?;
        }
        Ok(())
    }

    /// Expires active reservations past their time, a batch at a time.
    /// Several instances may run it: rows are claimed with SKIP LOCKED.
    ///
    /// # Errors
    /// Database failures.
    pub async fn expire_due(&self) -> Result<usize, InventoryError> {
        let mut conn = self.conn().await?;
        let cx = CallContext::background();
        conn.transaction::<_, Abort, _>(async |conn| {
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
            for d in &due {
                if let Some(reservation) =
                    Self::load_reservation(conn, OrderId::from(d.order_id), false).await?
                {
                    Self::give_back(conn, &cx, &reservation, ReservationStatus::Expired).await?;
                    tracing::info!(order.id = %d.order_id, "reservation expired");
                }
            }
            Ok(due.len())
        })
        .await
        .map_err(abort)
        .inspect(|n| {
            if *n > 0 {
                events::outbox::wake(crate::NAME);
            }
        })
    }
}

/// The background job that expires reservations.
pub struct ExpiryJob {
    module: InventoryModule,
}

impl ExpiryJob {
    /// A job over `module`.
    pub fn new(module: InventoryModule) -> ExpiryJob {
        ExpiryJob { module }
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let every = Duration::from_secs(self.module.settings.expiry_interval_secs.max(1));
        loop {
            match self.module.expire_due().await {
                Ok(n) if n > 0 => tracing::info!(expired = n, "reservations expired"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reservation expiry failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
        }
    }
}

#[async_trait::async_trait]
impl InventoryApi for InventoryModule {
    #[tracing::instrument(skip_all, fields(product.sku = %sku))]
    async fn stock(&self, cx: &CallContext, sku: &Sku) -> Result<StockLevel, InventoryError> {
        require_admin(cx)?;
        let mut conn = self.conn().await?;
        let row: Option<Row> = db::sql(format!("SELECT {STOCK_COLUMNS} FROM stock WHERE sku = $1"))
            .bind::<Text, _>(sku.as_str())
            .get_result(&mut conn)
            .await
            .optional()
            .map_err(database)?;
        match row {
            Some(row) => to_level(row),
            None => Ok(StockLevel {
                sku: sku.clone(),
                on_hand: 0,
                reserved: 0,
                available: 0,
                low_stock_threshold: self.settings.default_low_stock_threshold,
                updated_at: None,
            }),
        }
    }

    #[tracing::instrument(skip_all, fields(product.sku = %sku, quantity = adjustment.quantity))]
    async fn adjust(
        &self,
        cx: &CallContext,
        sku: &Sku,
        adjustment: Adjustment,
    ) -> Result<StockLevel, InventoryError> {
        require_admin(cx)?;
        check_adjustment(&adjustment)?;
        let default_threshold = self.settings.default_low_stock_threshold;
        let mut conn = self.conn().await?;
        let row = conn
            .transaction::<_, Abort, _>(async |conn| {
                db::sql(
                    "INSERT INTO stock (sku, on_hand, low_stock_threshold) VALUES ($1, 0, $2) ON CONFLICT DO NOTHING",
                )
                .bind::<Text, _>(sku.as_str())
                .bind::<Integer, _>(default_threshold)
                .execute(conn)
                .await?;
                let before: Row = db::sql(format!("SELECT {STOCK_COLUMNS} FROM stock WHERE sku = $1 FOR UPDATE"))
                    .bind::<Text, _>(sku.as_str())
                    .get_result(conn)
                    .await?;
                let after: Option<Row> = db::sql(format!(
                    "UPDATE stock SET on_hand = on_hand + $2, \
                     low_stock_threshold = COALESCE($3, low_stock_threshold), updated_at = now() \
                     WHERE sku = $1 AND on_hand + $2 - reserved >= 0 RETURNING {STOCK_COLUMNS}"
                ))
                .bind::<Text, _>(sku.as_str())
                .bind::<Integer, _>(adjustment.quantity)
                .bind::<Nullable<Integer>, _>(adjustment.low_stock_threshold)
                .get_result(conn)
                .await
                .map(Some)
                .or_else(|e| if e == DieselError::NotFound { Ok(None) } else { Err(e) })?;
                let Some(after) = after else {
                    return Err(Abort::Insufficient(vec![sku.to_string()]));
                };
                let reason = adjustment.reason.trim();
                after_change(conn, cx, Some(&before), &after, Change { kind: "adjustment", quantity: adjustment.quantity, reason: Some(reason), order: None }).await?;
                Ok(after)
            })
            .await
            .map_err(abort)?;
        events::outbox::wake(crate::NAME);
        tracing::info!(on_hand = row.on_hand, "stock adjusted");
        to_level(row)
    }

    async fn movements(
        &self,
        cx: &CallContext,
        sku: &Sku,
        query: ListMovements,
    ) -> Result<Page<Movement>, InventoryError> {
        require_admin(cx)?;
        let before =
            Cursor::after_id(query.cursor.as_ref()).map_err(|_| InventoryError::InvalidCursor)?;
        let mut conn = self.conn().await?;
        let rows: Vec<MovementRow> = db::sql(
            "SELECT id, kind, quantity, reason, order_id, on_hand_after, reserved_after, created_at FROM movements \
             WHERE sku = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        )
        .bind::<Text, _>(sku.as_str())
        .bind::<Nullable<SqlUuid>, _>(before)
        .bind::<BigInt, _>(query.limit.overfetch())
        .load(&mut conn)
        .await
        .map_err(database)?;
        let items = rows
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
            .collect();
        Ok(Page::from_overfetch(items, query.limit, |m| m.id))
    }

    #[tracing::instrument(skip_all, fields(order.id = %request.order_id, lines = request.lines.len()))]
    async fn reserve(
        &self,
        cx: &CallContext,
        request: ReserveStock,
    ) -> Result<Reservation, InventoryError> {
        require_admin_or_service(cx)?;
        let lines = check_reservation(&request)?;
        let order = request.order_id;
        let ttl = i64::try_from(self.settings.reservation_ttl_secs).unwrap_or(i64::MAX);
        let mut conn = self.conn().await?;
        let reservation = conn
            .transaction::<_, Abort, _>(async |conn| {
                #[derive(diesel::QueryableByName)]
                struct Made {
                    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
                    expires_at: chrono::DateTime<chrono::Utc>,
                    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
                    created_at: chrono::DateTime<chrono::Utc>,
                }
                let made: Option<Made> = db::sql(
                    "INSERT INTO reservations (order_id, status, expires_at) \
                     VALUES ($1, 'active', now() + make_interval(secs => $2::float8)) ON CONFLICT DO NOTHING \
                     RETURNING expires_at, created_at",
                )
                .bind::<SqlUuid, _>(order.as_uuid())
                .bind::<BigInt, _>(ttl)
                .get_result(conn)
                .await
                .optional()?;
                let Some(made) = made else {
                    // The order already has a reservation: the same one again, or a conflict.
                    let existing = Self::load_reservation(conn, order, false)
                        .await?
                        .ok_or(Abort::Fail(InventoryError::ReservationNotFound(order)))?;
                    return if existing.lines == lines {
                        Ok(existing)
                    } else {
                        Err(Abort::Fail(InventoryError::ReservationConflict(order)))
                    };
                };
                let mut short = Vec::new();
                let mut changed = Vec::new();
                for line in &lines {
                    // The whole check-and-take in one statement: concurrent
                    // reservations queue on the row lock and re-check.
                    let after: Option<Row> = db::sql(with_movement(
                        &format!(
                            "UPDATE stock SET reserved = reserved + $2, updated_at = now() \
                             WHERE sku = $1 AND on_hand - reserved >= $2 RETURNING {STOCK_COLUMNS}"
                        ),
                        2,
                    ))
                    .bind::<Text, _>(line.sku.as_str())
                    .bind::<Integer, _>(line.quantity)
                    .bind::<SqlUuid, _>(Uuid::now_v7())
                    .bind::<Text, _>("reservation")
                    .bind::<Integer, _>(line.quantity)
                    .bind::<Nullable<Text>, _>(None::<&str>)
                    .bind::<Nullable<SqlUuid>, _>(Some(order.as_uuid()))
                    .get_result(conn)
                    .await
                    .optional()?;
                    match after {
                        Some(after) => changed.push((line.clone(), after)),
                        None => short.push(line.sku.to_string()),
                    }
                }
                if !short.is_empty() {
                    return Err(Abort::Insufficient(short));
                }
                for (line, after) in &changed {
                    // After the stock row (its foreign key names a SKU that exists).
                    db::sql("INSERT INTO reservation_lines (order_id, sku, quantity) VALUES ($1, $2, $3)")
                        .bind::<SqlUuid, _>(order.as_uuid())
                        .bind::<Text, _>(line.sku.as_str())
                        .bind::<Integer, _>(line.quantity)
                        .execute(conn)
                        .await?;
                    let mut before = after.clone();
                    before.reserved -= line.quantity;
                    announce_change(conn, cx, Some(&before), after).await?;
                }
                Ok(Reservation {
                    order_id: order,
                    status: ReservationStatus::Active,
                    lines: lines.clone(),
                    expires_at: made.expires_at,
                    created_at: made.created_at,
                })
            })
            .await
            .map_err(abort)?;
        events::outbox::wake(crate::NAME);
        tracing::info!(status = reservation.status.as_str(), "stock reserved");
        Ok(reservation)
    }

    #[tracing::instrument(skip_all, fields(order.id = %order))]
    async fn commit(
        &self,
        cx: &CallContext,
        order: OrderId,
    ) -> Result<Reservation, InventoryError> {
        self.transition(cx, order, Transition::Commit).await
    }

    #[tracing::instrument(skip_all, fields(order.id = %order))]
    async fn release(
        &self,
        cx: &CallContext,
        order: OrderId,
    ) -> Result<Reservation, InventoryError> {
        self.transition(cx, order, Transition::Release).await
    }

    #[tracing::instrument(skip_all, fields(order.id = %order))]
    async fn restock(
        &self,
        cx: &CallContext,
        order: OrderId,
    ) -> Result<Reservation, InventoryError> {
        self.transition(cx, order, Transition::Restock).await
    }

    async fn reservation(
        &self,
        cx: &CallContext,
        order: OrderId,
    ) -> Result<Reservation, InventoryError> {
        require_admin_or_service(cx)?;
        let mut conn = self.conn().await?;
        Self::load_reservation(&mut conn, order, false)
            .await
            .map_err(database)?
            .ok_or(InventoryError::ReservationNotFound(order))
    }
}
