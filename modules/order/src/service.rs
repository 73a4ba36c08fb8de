//! [`OrderModule`]: carts, reading, cancelling and shipping orders, and
//! rebuilding their projections. Placing an order is [`crate::checkout`];
//! running it, [`crate::saga`].

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

use auth::ServiceTokens;
use catalog_api::{CatalogApi, CatalogError, ProductId};
use db::{Abort, Pool};
use diesel::result::Error as DieselError;
use diesel_async::{AsyncConnection as _, AsyncPgConnection};
use inventory_api::InventoryApi;
use kernel::{CallContext, Caller, Cursor, Failure, Page, PageLimit, Role};
use order_api::OrderStatus;
use payment_api::PaymentApi;
use web::etag::IfMatch;

use crate::Settings;
use crate::checkout::{Checkout, PlaceOutcome};
use crate::domain::{self, OrderEvent};
use crate::error::OrderError;
use crate::model::{Cart, Order, PlaceOrder, TimelineEntry};
use crate::repo::{self, AppendError, Direction, SagaOutcome, SagaRow, carts, keys, sagas};
use crate::saga::Saga;
use kernel::{FieldError, OrderId};

/// The modules the order module calls.
#[derive(Clone)]
pub struct Dependencies {
    /// Prices and names at checkout.
    pub catalog: Arc<dyn CatalogApi>,
    /// Stock reservations, and selling or giving them back.
    pub inventory: Arc<dyn InventoryApi>,
    /// Tokenizing the card, and authorizing, capturing, voiding or
    /// refunding the payment.
    pub payment: Arc<dyn PaymentApi>,
    /// The identity the saga calls them with.
    pub services: Arc<ServiceTokens>,
}

/// Orders, served from this process's database pool.
#[derive(Clone)]
pub struct OrderModule {
    pool: Pool,
    pub(crate) deps: Dependencies,
    pub(crate) settings: Arc<Settings>,
    saga: Saga,
}

/// A cart from its stored items (`None`: never set, so empty).
pub(crate) fn stored_cart(items: Option<&serde_json::Value>) -> Result<Cart, OrderError> {
    let items = match items {
        Some(items) => serde::Deserialize::deserialize(items)
            .map_err(|e| OrderError::Common(Failure::Unexpected(format!("stored cart: {e}"))))?,
        None => Vec::new(),
    };
    Ok(Cart { items })
}

/// A failed statement, as this module answers it (`db::query_failure`:
/// 503 when the database cannot answer now, 500 otherwise).
pub(crate) fn database(error: DieselError) -> OrderError {
    db::query_failure(crate::NAME, error)
}

fn caller(cx: &CallContext) -> Result<&Caller, OrderError> {
    cx.caller()
        .ok_or(OrderError::Common(Failure::Unauthenticated))
}

pub(crate) fn catalog_error(error: CatalogError) -> OrderError {
    match error {
        CatalogError::Common(failure @ (Failure::Degraded(_) | Failure::Unavailable(_))) => {
            failure.into()
        }
        other => OrderError::Common(Failure::Unexpected(other.to_string())),
    }
}

/// Where an order whose saga runs back is going, as a refusal names it
/// (the `status` of [`OrderError::InvalidTransition`]): `being cancelled`
/// when a cancel turned it; `failing` when a step failed (the close fails
/// the order for any outcome but a cancel's).
fn turning(saga: &SagaRow) -> &'static str {
    match saga.outcome {
        Some(SagaOutcome::Cancelled) => "being cancelled",
        Some(SagaOutcome::Failed) | None => "failing",
    }
}

/// Whether a cancel of an order in `status` whose saga is `saga` turns the
/// saga back (`false`: a cancel turned it already, so this one is answered
/// as done); the status to name when it is refused. The projection's status
/// first, then the direction: a failed or cancelled order's saga ran back
/// too. A failing order is refused: it ends `failed` whatever a cancel
/// says, and a 200 would promise the customer a cancellation that never comes.
fn cancel_turns(status: OrderStatus, saga: &SagaRow) -> Result<bool, String> {
    if status.is_final() || status == OrderStatus::Shipped {
        return Err(status.to_string());
    }
    match (saga.direction, saga.outcome) {
        (Direction::Forward, _) => Ok(true),
        (Direction::Compensate, Some(SagaOutcome::Cancelled)) => Ok(false),
        (Direction::Compensate, _) => Err(turning(saga).to_owned()),
    }
}

/// Why an order in `status` whose saga is `saga` cannot ship: the status
/// to name (the projection's first, as [`cancel_turns`] judges it); `None`
/// when it may, or shipped already (the same ship again, answered as done).
fn ship_refused(status: OrderStatus, saga: &SagaRow) -> Option<String> {
    if status == OrderStatus::Shipped {
        return None;
    }
    if status.is_final() {
        return Some(status.to_string());
    }
    if saga.direction == Direction::Compensate {
        return Some(turning(saga).to_owned());
    }
    (status != OrderStatus::Confirmed).then(|| status.to_string())
}

impl OrderModule {
    /// Orders over `pool`, calling `deps`.
    pub fn new(pool: Pool, deps: Dependencies, settings: Settings) -> OrderModule {
        let settings = Arc::new(settings);
        let saga = Saga::new(
            pool.clone(),
            Arc::clone(&deps.inventory),
            Arc::clone(&deps.payment),
            Arc::clone(&deps.services),
            Arc::clone(&settings),
        );
        OrderModule {
            pool,
            deps,
            settings,
            saga,
        }
    }

    /// The checkout saga this module runs.
    pub(crate) fn saga(&self) -> &Saga {
        &self.saga
    }

    pub(crate) async fn conn(&self) -> Result<db::Object, OrderError> {
        db::checkout(&self.pool, crate::NAME).await
    }

    /// The context of a call this module makes to another for the request
    /// of `cx`: the shop's own (a service token), as the call is when the
    /// other module runs in this process, with the request's id and
    /// deadline. Not the customer's: a module process apart would count
    /// every customer of this process as one client (its rate limit by
    /// address), and the calls here need no customer's rights.
    pub(crate) fn on_behalf(&self, cx: &CallContext) -> Result<CallContext, OrderError> {
        let services = self
            .deps
            .services
            .context(cx.request_id().clone())
            .map_err(|e| OrderError::Common(Failure::Unexpected(format!("service token: {e}"))))?;
        Ok(match cx.remaining() {
            Some(left) => services.with_timeout(left),
            None => services,
        })
    }

    /// Deletes idempotency keys older than `idempotency_retention_hours`,
    /// in batches, until none is left or `stop` is set; how many.
    ///
    /// # Errors
    /// Database unavailability.
    pub async fn prune_idempotency_keys(
        &self,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<usize, OrderError> {
        let hours = i32::try_from(self.settings.idempotency_retention_hours).unwrap_or(i32::MAX);
        let mut conn = self.conn().await?;
        keys::prune(&mut conn, hours, stop).await.map_err(database)
    }

    /// The caller's cart (empty when never set).
    ///
    /// # Errors
    /// [`Failure::Unauthenticated`](kernel::Failure::Unauthenticated); database unavailability.
    pub async fn cart(&self, cx: &CallContext) -> Result<Cart, OrderError> {
        let customer = caller(cx)?.user_id;
        let mut conn = self.conn().await?;
        stored_cart(
            carts::items(&mut conn, customer)
                .await
                .map_err(database)?
                .as_ref(),
        )
    }

    /// Replaces the caller's cart.
    ///
    /// # Errors
    /// [`Failure::Validation`](kernel::Failure::Validation): quantities outside 1..=100, a product
    /// twice, too many lines, unknown or unavailable products.
    pub async fn put_cart(
        &self,
        cx: &CallContext,
        cart: Cart,
        if_match: &IfMatch,
    ) -> Result<Cart, OrderError> {
        let customer = caller(cx)?.user_id;
        let mut errors = domain::cart_errors(&cart);
        if errors.is_empty() {
            let shop = self.on_behalf(cx)?;
            for (i, item) in cart.items.iter().enumerate() {
                // The fallback: a product the catalog served before still
                // passes while it cannot answer (the checkout prices the
                // cart afresh, never from this).
                match self
                    .deps
                    .catalog
                    .get_product_or_last_known(&shop, ProductId::from(item.product_id))
                    .await
                {
                    Ok(fetched) if fetched.product.active => {}
                    Ok(_) | Err(CatalogError::ProductNotFound(_)) => errors.push(FieldError::new(
                        format!("items[{i}].product_id"),
                        "no such product for sale",
                    )),
                    Err(e) => return Err(catalog_error(e)),
                }
            }
        }
        if !errors.is_empty() {
            return Err(OrderError::Common(Failure::Validation(errors)));
        }
        let json = serde_json::to_value(&cart.items)
            .map_err(|e| OrderError::Common(Failure::Unexpected(e.to_string())))?;
        let mut conn = self.conn().await?;
        if if_match.0.is_none() {
            carts::put(&mut conn, customer, json)
                .await
                .map_err(database)?;
            return Ok(cart);
        }
        conn.transaction::<_, Abort<OrderError>, _>(async |conn| {
            // The cart as a GET would show it now, tagged as it is; locked
            // (made, empty, if it never was: two conditional PUTs of an
            // empty cart must not both pass).
            let held = carts::lock(conn, customer).await?;
            let current = stored_cart(Some(&held)).map_err(Abort::Refuse)?;
            let body = serde_json::to_vec(&current).map_err(|e| {
                Abort::Refuse(OrderError::Common(Failure::Unexpected(e.to_string())))
            })?;
            // A cart already as asked is this change made once before (a
            // retry whose first answer was lost): answered as done (RFC
            // 9110 13.1.1), not refused for the version it made.
            let as_asked = held == json;
            if !as_asked && !if_match.allows(&web::etag::tag_of(&body)) {
                return Err(Abort::Refuse(OrderError::Common(
                    Failure::PreconditionFailed,
                )));
            }
            carts::put(conn, customer, json).await?;
            Ok(())
        })
        .await
        .map_err(|e| e.into_error(crate::NAME))?;
        Ok(cart)
    }

    /// Places an order for the caller's cart under an idempotency key, runs
    /// the checkout saga for up to `order.checkout_wait_ms`, and answers as
    /// `POST /orders` does (Stripe's idempotency semantics).
    ///
    /// # Errors
    /// What is not an answer to keep for the key: 409 while the key's first
    /// request runs, 422 for the key reused with another body, 5xx when a
    /// dependency is down (nothing was created; the key is freed).
    pub async fn place(
        &self,
        cx: &CallContext,
        key: &str,
        request: PlaceOrder,
    ) -> Result<PlaceOutcome, OrderError> {
        let customer = caller(cx)?.user_id;
        Checkout { module: self }
            .place(cx, customer, key, request)
            .await
    }

    /// The order `order` as stored, whoever asks.
    pub(crate) async fn load_order(&self, order: OrderId) -> Result<Order, OrderError> {
        let mut conn = self.conn().await?;
        repo::load_state(&mut conn, order, false)
            .await
            .map_err(database)?
            .map(|s| s.to_order())
            .ok_or(OrderError::NotFound)
    }

    /// One order: the caller's own, or any for an admin.
    ///
    /// # Errors
    /// [`OrderError::NotFound`] also for another customer's order.
    pub async fn order(&self, cx: &CallContext, id: OrderId) -> Result<Order, OrderError> {
        let caller = caller(cx)?;
        let order = self.load_order(id).await?;
        if caller.may_access(order.customer_id) {
            Ok(order)
        } else {
            Err(OrderError::NotFound)
        }
    }

    /// The caller's orders, newest first.
    ///
    /// # Errors
    /// [`Failure::InvalidCursor`](kernel::Failure::InvalidCursor) for a cursor of another list.
    pub async fn orders(
        &self,
        cx: &CallContext,
        limit: PageLimit,
        cursor: Option<Cursor>,
    ) -> Result<Page<Order>, OrderError> {
        let customer = caller(cx)?.user_id;
        let after = Cursor::after_id(cursor.as_ref())
            .map_err(|_| OrderError::Common(Failure::InvalidCursor))?;
        let mut conn = self.conn().await?;
        let orders = repo::customer_orders(&mut conn, customer, after, limit.overfetch())
            .await
            .map_err(database)?
            .iter()
            .map(|s| s.to_order())
            .collect();
        Ok(Page::from_overfetch(orders, limit, |o| o.id.as_uuid()))
    }

    /// The order's history.
    ///
    /// # Errors
    /// [`OrderError::NotFound`] also for another customer's order.
    pub async fn timeline(
        &self,
        cx: &CallContext,
        id: OrderId,
    ) -> Result<Vec<TimelineEntry>, OrderError> {
        self.order(cx, id).await?;
        let mut conn = self.conn().await?;
        repo::timeline(&mut conn, id).await.map_err(database)
    }

    /// Cancels an order not yet shipped: the saga turns round and gives
    /// everything back (void or refund, release or restock).
    ///
    /// # Errors
    /// [`OrderError::InvalidTransition`] for a shipped, failed or cancelled
    /// order, or one failing (a step failed and its saga gives everything
    /// back: it ends `failed`, whatever a cancel says).
    pub async fn cancel(&self, cx: &CallContext, id: OrderId) -> Result<Order, OrderError> {
        let caller = caller(cx)?.clone();
        self.order(cx, id).await?;
        let reason = if caller.has(Role::Admin) {
            "cancelled by the shop".to_owned()
        } else {
            "cancelled by the customer".to_owned()
        };
        // Given back before the saga runs: it borrows its own.
        let mut conn = self.conn().await?;
        conn.transaction::<_, AppendError, _>(async |conn| {
            let saga = sagas::load(conn, id, true).await?;
            let state = repo::load_state(conn, id, true)
                .await?
                .ok_or(AppendError::NotFound)?;
            if !cancel_turns(state.order.status, &saga).map_err(AppendError::Refused)? {
                return Ok(()); // being cancelled already
            }
            sagas::cancel(conn, id, &reason).await?;
            let requested = OrderEvent::CancellationRequested {
                reason: reason.clone(),
            };
            repo::append(conn, id, &requested, cx).await?;
            Ok(())
        })
        .await
        .map_err(|e| match e {
            AppendError::Refused(status) => OrderError::InvalidTransition {
                status,
                action: "cancel",
            },
            AppendError::NotFound => OrderError::NotFound,
            AppendError::Db(e) => database(e),
        })?;
        drop(conn);
        self.saga.turned_here(id);
        let saga = self.saga.clone();
        let driving = tokio::spawn(async move { saga.drive(id).await }.in_current_span());
        let _ = tokio::time::timeout(
            Duration::from_millis(self.settings.checkout_wait_ms),
            driving,
        )
        .await;
        self.load_order(id).await
    }

    /// Marks a confirmed order shipped. Admins only.
    ///
    /// # Errors
    /// [`Failure::Forbidden`](kernel::Failure::Forbidden); [`OrderError::InvalidTransition`]
    /// unless confirmed (or shipped already), naming the order's status.
    pub async fn ship(&self, cx: &CallContext, id: OrderId) -> Result<Order, OrderError> {
        if !caller(cx)?.has(Role::Admin) {
            return Err(OrderError::Common(Failure::Forbidden));
        }
        let mut conn = self.conn().await?;
        let state = conn
            .transaction::<_, AppendError, _>(async |conn| {
                // The saga, then the order, both locked (the order every
                // writer locks them in): judged on the status, never on
                // `append`'s refusal, a sentence of its own.
                let saga = sagas::load(conn, id, true).await.map_err(|e| {
                    if e == DieselError::NotFound {
                        AppendError::NotFound
                    } else {
                        AppendError::Db(e)
                    }
                })?;
                let state = repo::load_state(conn, id, true)
                    .await?
                    .ok_or(AppendError::NotFound)?;
                if let Some(status) = ship_refused(state.order.status, &saga) {
                    return Err(AppendError::Refused(status));
                }
                repo::append(conn, id, &OrderEvent::Shipped, cx).await
            })
            .await
            .map_err(|e| match e {
                AppendError::Refused(status) => OrderError::InvalidTransition {
                    status,
                    action: "ship",
                },
                AppendError::NotFound => OrderError::NotFound,
                AppendError::Db(e) => database(e),
            })?;
        Ok(state.to_order())
    }

    /// Rewrites every order's projection from its events (admin tooling and
    /// the projection test); returns how many were rebuilt.
    ///
    /// # Errors
    /// Database errors.
    pub async fn rebuild_projections(&self) -> Result<usize, OrderError> {
        let mut conn = self.conn().await?;
        let ids = repo::order_ids(&mut conn).await.map_err(database)?;
        for &order in &ids {
            conn.transaction::<_, DieselError, _>(async |conn| {
                repo::load_state(conn, order, true).await?;
                repo::rebuild(conn, order).await?;
                Ok(())
            })
            .await
            .map_err(database)?;
        }
        Ok(ids.len())
    }

    /// Whether the stored projection of `id` equals the fold of its events.
    ///
    /// # Errors
    /// Database errors; [`OrderError::NotFound`].
    pub async fn projection_matches_events(&self, id: OrderId) -> Result<bool, OrderError> {
        let mut conn: db::Object = self.conn().await?;
        let conn: &mut AsyncPgConnection = &mut conn;
        let stored = repo::load_state(conn, id, false).await.map_err(database)?;
        let folded = repo::fold(conn, id).await.map_err(database)?;
        match (stored, folded) {
            (Some(stored), Some(folded)) => Ok(stored == folded),
            _ => Err(OrderError::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saga(direction: Direction, outcome: Option<SagaOutcome>) -> SagaRow {
        SagaRow {
            direction,
            outcome,
            reason: None,
            payment_method: "pm_test".into(),
            card_last4: "4242".into(),
            reserve_attempted: true,
            payment_attempted: true,
            request_id: None,
            done: false,
            attempts: 0,
            step: None,
        }
    }

    /// A saga's way and how it ends.
    type Run = (Direction, Option<SagaOutcome>);
    const FORWARD: Run = (Direction::Forward, None);
    const FAILING: Run = (Direction::Compensate, Some(SagaOutcome::Failed));
    const CANCELLING: Run = (Direction::Compensate, Some(SagaOutcome::Cancelled));

    /// A cancel of an order whose saga turned back because a step failed
    /// is refused (it ends `failed`, whatever the cancel says), named
    /// `failing`; one already being cancelled is the same cancel again.
    #[test]
    fn a_cancel_of_a_failing_order_is_refused_and_of_a_cancelling_one_is_done() {
        use OrderStatus as S;
        let cancel = |status: OrderStatus, (direction, outcome): Run| {
            cancel_turns(status, &saga(direction, outcome))
        };
        for status in [S::Pending, S::Reserved, S::Paid, S::Confirmed] {
            assert_eq!(cancel(status, FORWARD), Ok(true), "{status}");
            assert_eq!(cancel(status, CANCELLING), Ok(false), "{status}");
            assert_eq!(cancel(status, FAILING), Err("failing".into()), "{status}");
            // Turned without an outcome: the close fails it.
            let turned = (Direction::Compensate, None);
            assert_eq!(cancel(status, turned), Err("failing".into()), "{status}");
        }
        // The status first: a failed or cancelled order's saga ran back too.
        assert_eq!(cancel(S::Failed, FAILING), Err("failed".into()));
        assert_eq!(cancel(S::Cancelled, CANCELLING), Err("cancelled".into()));
        assert_eq!(cancel(S::Shipped, FORWARD), Err("shipped".into()));
    }

    /// A ship refused names the order's status (the projection's first),
    /// never a sentence of the fold's nor `being cancelled` for an order
    /// that failed.
    #[test]
    fn a_ship_refused_names_the_orders_status() {
        use OrderStatus as S;
        let ship = |status: OrderStatus, (direction, outcome): Run| {
            ship_refused(status, &saga(direction, outcome))
        };
        assert_eq!(ship(S::Confirmed, FORWARD), None);
        assert_eq!(ship(S::Shipped, FORWARD), None, "shipped already: done");
        for status in [S::Pending, S::Reserved, S::Paid] {
            assert_eq!(ship(status, FORWARD), Some(status.to_string()));
        }
        assert_eq!(ship(S::Failed, FAILING), Some("failed".into()));
        assert_eq!(ship(S::Cancelled, CANCELLING), Some("cancelled".into()));
        assert_eq!(ship(S::Reserved, FAILING), Some("failing".into()));
        assert_eq!(
            ship(S::Confirmed, CANCELLING),
            Some("being cancelled".into())
        );
        let refused = OrderError::InvalidTransition {
            status: ship(S::Pending, FORWARD).unwrap_or_default(),
            action: "ship",
        };
        assert_eq!(
            refused.to_string(),
            "the order is pending: ship is not possible"
        );
    }
}
