//! [`InventoryModule`]: the in-process implementation of [`InventoryApi`].
//! Each call is one transaction over [`crate::repo`]; the rules come from
//! [`crate::domain`].

use catalog_api::Sku;
use db::Pool;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection as _, AsyncPgConnection};
use inventory_api::events::{LowStock, OutOfStock, StockChanged};
use inventory_api::{
    Adjustment, InventoryApi, InventoryError, ListMovements, Movement, OrderId, Reservation,
    ReservationStatus, ReserveStock, StockLevel,
};
use kernel::{CallContext, Cursor, Failure, Page, Role};

use crate::Settings;
use crate::domain::{self, Crossing, Transition};
use crate::repo::{self, LineMove, Row};

/// The inventory, served from this process's database pool.
#[derive(Clone)]
pub struct InventoryModule {
    pool: Pool,
    settings: Settings,
}

/// Why an inventory transaction ended without committing.
type Abort = db::Abort<InventoryError>;

/// Too few units of these SKUs: the whole transaction is refused.
fn insufficient(skus: Vec<String>) -> Abort {
    Abort::Refuse(InventoryError::InsufficientStock(skus))
}

/// What a refused transaction answers.
fn abort(a: Abort) -> InventoryError {
    a.into_error(crate::NAME)
}

/// A failed statement, as this module answers it (`db::query_failure`:
/// 503 when the database cannot answer now, 500 otherwise).
fn database(error: DieselError) -> InventoryError {
    db::query_failure(crate::NAME, error)
}

fn require_admin(cx: &CallContext) -> Result<(), InventoryError> {
    match cx.caller() {
        None => Err(InventoryError::Common(Failure::Unauthenticated)),
        Some(c) if !c.has(Role::Admin) => Err(InventoryError::Common(Failure::Forbidden)),
        Some(_) => Ok(()),
    }
}

/// Reservations are read by admins and by the order module (the `service`
/// role).
fn require_admin_or_service(cx: &CallContext) -> Result<(), InventoryError> {
    match cx.caller() {
        None => Err(InventoryError::Common(Failure::Unauthenticated)),
        Some(c) if !c.is_admin_or_service() => Err(InventoryError::Common(Failure::Forbidden)),
        Some(_) => Ok(()),
    }
}

/// Reservations are made and moved by the order module only (the `service`
/// role): its saga owns them. An admin's move would leave the stock and the
/// order disagreeing (a shipped order's units put back while it stays
/// confirmed; a reserve under an order's id before its checkout, which then
/// fails as a conflict).
fn require_service(cx: &CallContext) -> Result<(), InventoryError> {
    match cx.caller() {
        None => Err(InventoryError::Common(Failure::Unauthenticated)),
        Some(c) if !c.has(Role::Service) => Err(InventoryError::Common(Failure::Forbidden)),
        Some(_) => Ok(()),
    }
}

/// Where a page of a SKU's movements ended: the last movement's id, and
/// the SKU, so a cursor goes on with the list it came from only (one from
/// another SKU's list is refused, not read as a place in this one).
#[derive(serde::Serialize, serde::Deserialize)]
struct MovementsKey {
    id: uuid::Uuid,
    /// Absent in cursors handed out before it was: those are still taken
    /// (a rolling deployment's older instances hand them out), as the
    /// catalog's listing takes its cursors without filters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sku: Option<String>,
}

fn to_level(row: Row) -> Result<StockLevel, InventoryError> {
    row.into_level().map_err(|e| Failure::Unexpected(e).into())
}

/// Adds to `batch` what a stock change means: stock changed, and low or
/// out of stock when the change raised that alert (the movement is written
/// already).
fn announce_change(batch: &mut events::outbox::Batch<'_>, after: &Row) -> Result<(), Abort> {
    let changed = StockChanged {
        sku: stored_sku(after)?,
        on_hand: after.on_hand,
        reserved: after.reserved,
        available: after.available(),
        low_stock_threshold: Some(after.low_stock_threshold),
        version: Some(after.version),
    };
    batch.push(&changed)?;
    announce_crossing(batch, after)
}

fn stored_sku(row: &Row) -> Result<Sku, Abort> {
    Sku::parse(&row.sku)
        .map_err(|e| Abort::Refuse(InventoryError::Common(Failure::Unexpected(e.to_string()))))
}

/// The `StockChanged` a reservation's line announces, prepared before the
/// statement that moves the line writes it ([`repo::move_line`]).
fn stock_changed(
    cx: &CallContext,
    line: &inventory_api::ReservationLine,
) -> events::outbox::Prepared {
    events::outbox::Prepared::new::<StockChanged>(crate::NAME, cx, line.sku.to_string())
}

/// Adds to `batch` the low or out of stock a change means, if it raised
/// that alert (`domain::Alert`: once per fall, not on every move below the
/// threshold; the change's `StockChanged` is written already).
fn announce_crossing(batch: &mut events::outbox::Batch<'_>, after: &Row) -> Result<(), Abort> {
    let raised = after
        .raised()
        .map_err(|e| Abort::Refuse(InventoryError::Common(Failure::Unexpected(e))))?;
    match domain::crossing(raised, after.available(), after.low_stock_threshold) {
        Some(Crossing::OutOfStock) => {
            batch.push(&OutOfStock {
                sku: stored_sku(after)?,
            })?;
        }
        Some(Crossing::LowStock {
            available,
            threshold,
        }) => {
            let low = LowStock {
                sku: stored_sku(after)?,
                available,
                threshold,
            };
            batch.push(&low)?;
        }
        None => {}
    }
    Ok(())
}

/// Moves every line of a reservation `how` in SKU order (rows locked one by
/// one, as reservations lock them), after setting the reservation's new
/// `status`; each move writes its `StockChanged`, and an alert a move
/// raised is announced after them (one more statement, only then). The
/// status and the moves are pipelined (one round trip, ADR 0015).
async fn move_lines(
    conn: &AsyncPgConnection,
    cx: &CallContext,
    reservation: &Reservation,
    how: LineMove,
    status: ReservationStatus,
) -> Result<(), Abort> {
    let order = reservation.order_id;
    // The reservation row is locked already; the stock rows are locked
    // last, each by its UPDATE, so they are held for as short a time as
    // possible (a best-selling SKU's row is every checkout's).
    let changes: Vec<_> = (reservation.lines.iter())
        .map(|line| stock_changed(cx, line))
        .collect();
    let (set, moved) = futures_util::future::join(
        repo::set_status(conn, order, status),
        futures_util::future::join_all(
            (reservation.lines.iter().zip(&changes))
                .map(|(line, changed)| repo::move_line(conn, order, line, how, changed)),
        ),
    )
    .await;
    set?;
    let mut batch = events::outbox::Batch::new(crate::NAME, cx);
    let mut moved_lines = Vec::with_capacity(moved.len());
    let mut too_many = Vec::new();
    for (line, after) in reservation.lines.iter().zip(moved) {
        match after? {
            Some(after) => moved_lines.push(after),
            // Its units would not fit the column (`repo::move_line`): the
            // transaction is rolled back, so nothing of the move is kept.
            None if how == LineMove::Return => too_many.push(line.sku.to_string()),
            None => return Err(DieselError::NotFound.into()),
        }
    }
    if !too_many.is_empty() {
        return Err(Abort::Refuse(InventoryError::Common(Failure::Validation(
            vec![kernel::FieldError::new(
                "lines",
                format!(
                    "putting these units back would hold more than {} on hand of {}",
                    i32::MAX,
                    too_many.join(", ")
                ),
            )],
        ))));
    }
    for after in &moved_lines {
        announce_crossing(&mut batch, after)?;
    }
    batch.write(conn).await?;
    Ok(())
}

/// What one pass of the expiry job did ([`InventoryModule::expire_pass`]).
#[derive(Debug, Default)]
pub(crate) struct ExpiryPass {
    /// Reservations expired.
    pub(crate) expired: usize,
    /// Whether it ended while more may be due: out of time, or told to stop.
    pub(crate) cut_short: bool,
}

impl InventoryModule {
    /// The inventory over its own pool.
    pub fn new(pool: Pool, settings: Settings) -> InventoryModule {
        InventoryModule { pool, settings }
    }

    /// The `[inventory]` settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    async fn conn(&self) -> Result<db::Object, InventoryError> {
        db::checkout(&self.pool, crate::NAME).await
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
        require_service(cx)?;
        let (from, done) = to.states();
        let mut conn = self.conn().await?;
        let moved = conn
            .transaction::<_, Abort, _>(async |conn| {
                let mut found = repo::load_reservation(conn, order, true).await?;
                if found.is_none() && matches!(to, Transition::Release) {
                    // Released before it was made: a reserve still on its way
                    // (its caller gave up waiting and turned back) must not
                    // hold the stock when it lands. A fence, committed with
                    // the answer; if a reservation was made meanwhile, the
                    // fence waited for it and it is released as usual.
                    if repo::fence(conn, order).await? {
                        return Ok(None);
                    }
                    found = repo::load_reservation(conn, order, true).await?;
                }
                let Some(reservation) = found.filter(|r| !repo::is_fence(r)) else {
                    return Ok(None);
                };
                if done.contains(&reservation.status) {
                    return Ok(Some(reservation));
                }
                if reservation.status != from {
                    return Err(Abort::Refuse(InventoryError::InvalidTransition {
                        order,
                        status: reservation.status,
                    }));
                }
                let (how, status) = match to {
                    Transition::Commit => (LineMove::Sale, ReservationStatus::Committed),
                    Transition::Restock => (LineMove::Return, ReservationStatus::Returned),
                    Transition::Release => (LineMove::Release, ReservationStatus::Released),
                };
                move_lines(conn, cx, &reservation, how, status).await?;
                Ok(Some(Reservation {
                    status,
                    ..reservation
                }))
            })
            .await
            .map_err(abort)?;
        let reservation = moved.ok_or(InventoryError::ReservationNotFound(order))?;
        events::outbox::wake(crate::NAME);
        Ok(reservation)
    }

    /// [`InventoryApi::adjust`], and whether its answer is a replay: the
    /// adjustment's idempotency key made its movement before, nothing was
    /// made now, and the stock is answered as it is now (other movements
    /// may have come since; the first answer is not kept). The route says
    /// so in `idempotent-replayed`.
    ///
    /// # Errors
    /// As [`InventoryApi::adjust`].
    #[tracing::instrument(skip_all, fields(product.sku = %sku, quantity = adjustment.quantity))]
    pub(crate) async fn adjust_keyed(
        &self,
        cx: &CallContext,
        sku: &Sku,
        adjustment: Adjustment,
    ) -> Result<(StockLevel, bool), InventoryError> {
        require_admin(cx)?;
        domain::check_adjustment(&adjustment)?;
        let mut conn = self.conn().await?;
        // A request with the same key that came first is waited for on the
        // stock row's lock ([`Self::adjust_in`]). Should it ever not be,
        // the unique index refuses the second movement, and the request is
        // answered again, now as a replay (or a reused key).
        let (row, replayed) = match self.adjust_in(&mut conn, cx, sku, &adjustment).await {
            Err(Abort::Db(DieselError::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                info,
            ))) if info.constraint_name() == Some(repo::ADJUSTMENT_KEY_UNIQUE) => {
                self.adjust_in(&mut conn, cx, sku, &adjustment).await
            }
            other => other,
        }
        .map_err(abort)?;
        if replayed {
            tracing::info!(on_hand = row.on_hand, "stock adjustment replayed");
        } else {
            events::outbox::wake(crate::NAME);
            tracing::info!(on_hand = row.on_hand, "stock adjusted");
        }
        Ok((to_level(row)?, replayed))
    }

    /// The transaction of [`Self::adjust_keyed`]: the stock row after it,
    /// and whether the adjustment's key had made its movement already (the
    /// row is then as it is, and nothing was written).
    async fn adjust_in(
        &self,
        conn: &mut AsyncPgConnection,
        cx: &CallContext,
        sku: &Sku,
        adjustment: &Adjustment,
    ) -> Result<(Row, bool), Abort> {
        let default_threshold = self.settings.default_low_stock_threshold;
        let reason = adjustment.reason.trim();
        let key = adjustment.idempotency_key.as_deref();
        conn.transaction::<_, Abort, _>(async |conn| {
            // A SKU new here is made with no alert raised: one received
            // at or below its threshold is announced low, as a SKU going
            // down is (`domain::Alert`).
            let before = repo::lock_stock(conn, sku, default_threshold).await?;
            // Under the row's lock, so a request with this key that came
            // first has committed its movement (read here) or rolled back.
            // Looked up before the overflow check: a replay changes nothing.
            if let Some(key) = key
                && let Some((quantity, made)) = repo::keyed_adjustment(conn, sku, key).await?
            {
                if quantity != adjustment.quantity || made.as_deref() != Some(reason) {
                    return Err(Abort::Refuse(InventoryError::IdempotencyKeyReused));
                }
                return Ok((before, true));
            }
            if before.on_hand.checked_add(adjustment.quantity).is_none() {
                // The column's integer would overflow: the database's
                // error would be a 500.
                return Err(Abort::Refuse(InventoryError::Common(Failure::Validation(
                    vec![kernel::FieldError::new(
                        "quantity",
                        format!(
                            "would put more than {} units on hand ({} are)",
                            i32::MAX,
                            before.on_hand
                        ),
                    )],
                ))));
            }
            let after = repo::adjust(
                conn,
                sku,
                adjustment.quantity,
                adjustment.low_stock_threshold,
                reason,
                key,
            )
            .await?
            .ok_or_else(|| insufficient(vec![sku.to_string()]))?;
            let mut batch = events::outbox::Batch::new(crate::NAME, cx);
            announce_change(&mut batch, &after)?;
            batch.write(conn).await?;
            Ok((after, false))
        })
        .await
    }

    /// Expires every active reservation past its time, as a pass of the
    /// expiry job does (`expire_pass`: for `expiry_interval_secs` at most,
    /// passing over a reservation whose expiry fails), never stopped.
    ///
    /// # Errors
    /// Database failures before any reservation expired; after some, the
    /// pass ends there (what expired stays expired).
    pub async fn expire_due(&self) -> Result<usize, InventoryError> {
        Ok(self.expire_pass(|| false).await?.expired)
    }

    /// One pass of the expiry job: expires active reservations past their
    /// time until none is due, `stopping` returns true (checked between
    /// reservations), or the pass has run for `expiry_interval_secs` (the
    /// job then goes on at once). A pass capped at 100 reservations, then
    /// the interval's sleep, expired some 200 a minute: after an outage of
    /// the order module thousands kept their stock held for tens of minutes.
    ///
    /// Several instances may run it: rows are claimed with SKIP LOCKED.
    /// Each reservation is expired in a transaction of its own, so its
    /// stock rows are locked in SKU order and alone, as a reservation locks
    /// them: a batch in one transaction locked the SKUs of several
    /// reservations in no common order, and deadlocked with checkouts. One
    /// whose expiry fails is logged and passed over until the next pass:
    /// the oldest are claimed first, and a pass that stopped at it expired
    /// none behind it, ever.
    ///
    /// # Errors
    /// Database failures outside a reservation's expiry (no connection, a
    /// claim that fails) before any expired; after some, the pass ends
    /// there (what expired stays expired).
    pub(crate) async fn expire_pass(
        &self,
        stopping: impl Fn() -> bool,
    ) -> Result<ExpiryPass, InventoryError> {
        let budget = std::time::Duration::from_secs(self.settings.expiry_interval_secs.max(1));
        let started = std::time::Instant::now();
        let mut conn = self.conn().await?;
        let cx = CallContext::background();
        let mut pass = ExpiryPass::default();
        let mut passed_over: Vec<uuid::Uuid> = Vec::new();
        loop {
            if stopping() || started.elapsed() >= budget {
                pass.cut_short = true;
                break;
            }
            let mut claimed = None;
            let expired = conn
                .transaction::<_, Abort, _>(async |conn| {
                    let Some(order) = repo::claim_expired(conn, &passed_over).await? else {
                        return Ok(false);
                    };
                    claimed = Some(order);
                    if let Some(reservation) = repo::load_reservation(conn, order, false).await? {
                        let status = ReservationStatus::Expired;
                        move_lines(conn, &cx, &reservation, LineMove::Expiry, status).await?;
                        tracing::info!(order.id = %order, "reservation expired");
                    }
                    Ok(true)
                })
                .await
                .map_err(abort);
            match (expired, claimed) {
                (Ok(true), _) => {
                    pass.expired += 1;
                    events::outbox::wake(crate::NAME);
                }
                (Ok(false), _) => break,
                (Err(e), Some(order)) => {
                    tracing::warn!(
                        order.id = %order,
                        error = %e,
                        "reservation expiry failed; passed over until the next pass"
                    );
                    passed_over.push(order.as_uuid());
                }
                (Err(e), None) if pass.expired > 0 => {
                    tracing::warn!(error = %e, "reservation expiry stopped");
                    break;
                }
                (Err(e), None) => return Err(e),
            }
        }
        Ok(pass)
    }
}

#[async_trait::async_trait]
impl InventoryApi for InventoryModule {
    #[tracing::instrument(skip_all, fields(product.sku = %sku))]
    async fn stock(&self, cx: &CallContext, sku: &Sku) -> Result<StockLevel, InventoryError> {
        require_admin(cx)?;
        let mut conn = self.conn().await?;
        match repo::find_stock(&mut conn, sku).await.map_err(database)? {
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

    async fn adjust(
        &self,
        cx: &CallContext,
        sku: &Sku,
        adjustment: Adjustment,
    ) -> Result<StockLevel, InventoryError> {
        Ok(self.adjust_keyed(cx, sku, adjustment).await?.0)
    }

    async fn movements(
        &self,
        cx: &CallContext,
        sku: &Sku,
        query: ListMovements,
    ) -> Result<Page<Movement>, InventoryError> {
        require_admin(cx)?;
        let before = match &query.cursor {
            Some(cursor) => {
                let key: MovementsKey = cursor
                    .decode()
                    .map_err(|_| InventoryError::Common(Failure::InvalidCursor))?;
                if key.sku.as_deref().is_some_and(|s| s != sku.as_str()) {
                    return Err(InventoryError::Common(Failure::InvalidCursor));
                }
                Some(key.id)
            }
            None => None,
        };
        let mut conn = self.conn().await?;
        let items = repo::movements(&mut conn, sku, before, query.limit.overfetch())
            .await
            .map_err(database)?;
        let Page { items, next_cursor } = Page::from_overfetch(items, query.limit, |m| m.id);
        // Where the page ended, as `from_overfetch` says, with the SKU.
        let next_cursor = next_cursor.and(items.last()).map(|last| {
            Cursor::encode(&MovementsKey {
                id: last.id,
                sku: Some(sku.to_string()),
            })
        });
        Ok(Page { items, next_cursor })
    }

    #[tracing::instrument(skip_all, fields(order.id = %request.order_id, lines = request.lines.len()))]
    async fn reserve(
        &self,
        cx: &CallContext,
        request: ReserveStock,
    ) -> Result<Reservation, InventoryError> {
        require_service(cx)?;
        let lines = domain::check_reservation(&request)?;
        let order = request.order_id;
        let ttl = i64::try_from(self.settings.reservation_ttl_secs).unwrap_or(i64::MAX);
        let changes: Vec<_> = lines.iter().map(|line| stock_changed(cx, line)).collect();
        let mut conn = self.conn().await?;
        let reserved = conn
            .transaction::<_, Abort, _>(async |conn| {
                let conn: &AsyncPgConnection = conn;
                // Pipelined, one round trip (ADR 0015): the reservation,
                // each line's check-and-take in one statement in SKU order
                // (concurrent reservations queue on the row lock and
                // re-check) with its movement and its event, the lines.
                // The first outcome in that order decides; what ran after
                // a refusal is rolled back.
                let (made, moved, written) = futures_util::future::join3(
                    repo::insert_reservation(conn, order, ttl),
                    futures_util::future::join_all((lines.iter().zip(&changes)).map(
                        |(line, changed)| {
                            repo::move_line(conn, order, line, LineMove::Reserve, changed)
                        },
                    )),
                    repo::insert_lines(conn, order, &lines),
                )
                .await;
                let Some(made) = made? else {
                    // The order has a reservation already: the same one
                    // again, or a conflict (told apart after the rollback).
                    return Err(Abort::Refuse(InventoryError::ReservationConflict(order)));
                };
                let mut short = Vec::new();
                let mut changed = Vec::new();
                for (line, after) in lines.iter().zip(moved) {
                    match after? {
                        Some(after) => changed.push(after),
                        None => short.push(line.sku.to_string()),
                    }
                }
                if !short.is_empty() {
                    return Err(insufficient(short));
                }
                written?;
                let mut batch = events::outbox::Batch::new(crate::NAME, cx);
                for after in &changed {
                    announce_crossing(&mut batch, after)?;
                }
                batch.write(conn).await?;
                Ok(Reservation {
                    order_id: order,
                    status: ReservationStatus::Active,
                    lines: lines.clone(),
                    expires_at: made.expires_at,
                    created_at: made.created_at,
                })
            })
            .await;
        let reservation = match reserved {
            Ok(reservation) => reservation,
            Err(Abort::Refuse(InventoryError::ReservationConflict(_))) => {
                // The order already has a reservation: the same one again
                // (answered as it is), or a conflict. One whose stock went
                // back (released, expired, fenced off by a release that
                // came first, or sold and then put back on the shelf)
                // holds nothing: a reserve asked again then, late or
                // replayed, is refused, not answered as held.
                let existing = repo::load_reservation(&mut conn, order, false)
                    .await
                    .map_err(database)?
                    .ok_or(InventoryError::ReservationNotFound(order))?;
                return match existing.status {
                    status @ (ReservationStatus::Released
                    | ReservationStatus::Expired
                    | ReservationStatus::Returned) => {
                        Err(InventoryError::InvalidTransition { order, status })
                    }
                    _ if existing.lines == lines => Ok(existing),
                    _ => Err(InventoryError::ReservationConflict(order)),
                };
            }
            Err(a) => return Err(abort(a)),
        };
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
        repo::load_reservation(&mut conn, order, false)
            .await
            .map_err(database)?
            .filter(|r| !repo::is_fence(r))
            .ok_or(InventoryError::ReservationNotFound(order))
    }
}
