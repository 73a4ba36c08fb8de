//! [`OrderModule`]: carts, placing orders (with idempotency keys), reading,
//! cancelling and shipping them. The checkout itself is the saga
//! ([`crate::saga`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

use auth::ServiceTokens;
use catalog_api::{CatalogApi, CatalogError, ProductId};
use db::{Pool, PoolError};
use diesel::result::Error as DieselError;
use diesel::sql_types::{Integer, Jsonb, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use inventory_api::InventoryApi;
use kernel::{CallContext, Caller, Cursor, FieldError, Money, OrderId, Page, PageLimit, Role};
use order_api::OrderStatus;
use payment_api::{PaymentApi, PaymentError, Tokenize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::Settings;
use crate::error::OrderError;
use crate::model::{
    Cart, CartItem, MAX_LINES, MAX_QUANTITY, Order, OrderEvent, OrderLine, OrderState, PlaceOrder,
    TimelineEntry,
};
use crate::store::{self, AppendError, SagaRow};

/// The modules the order module calls.
#[derive(Clone)]
pub struct Dependencies {
    /// Prices and names at checkout.
    pub catalog: Arc<dyn CatalogApi>,
    /// Reservations.
    pub inventory: Arc<dyn InventoryApi>,
    /// Payments.
    pub payment: Arc<dyn PaymentApi>,
    /// The identity the saga calls them with.
    pub services: Arc<ServiceTokens>,
}

/// Orders, served from this process's database pool.
#[derive(Clone)]
pub struct OrderModule {
    pub(crate) pool: Pool,
    pub(crate) deps: Dependencies,
    pub(crate) settings: Settings,
    /// This instance, as a saga lease owner.
    pub(crate) instance: Uuid,
}

/// What `POST /orders` answers: the status and the body, as stored for the
/// idempotency key and replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaceOutcome {
    /// 201 (done), 202 (still running), or an error's status.
    pub status: u16,
    /// The order, or a problem body.
    pub body: serde_json::Value,
    /// The order's URL, for 201 and 202.
    pub location: Option<String>,
    /// Whether this is a replay of the key's first response.
    pub replayed: bool,
}

pub(crate) fn unavailable(error: PoolError) -> OrderError {
    tracing::warn!(error = %error, "order database unavailable");
    OrderError::Unavailable("the order database is unavailable".to_owned())
}

pub(crate) fn database(error: DieselError) -> OrderError {
    match db::unavailable_reason(&error) {
        Some(reason) => OrderError::Unavailable(format!("the order database {reason}")),
        None => OrderError::Unexpected(format!("order database error: {error}")),
    }
}

fn caller(cx: &CallContext) -> Result<&Caller, OrderError> {
    cx.caller().ok_or(OrderError::Unauthenticated)
}

fn catalog_error(error: CatalogError) -> OrderError {
    match error {
        CatalogError::Degraded(d) => OrderError::Degraded(d),
        CatalogError::Unavailable(reason) => OrderError::Unavailable(reason),
        other => OrderError::Unexpected(other.to_string()),
    }
}

/// A valid `Idempotency-Key`: 1 to 255 visible ASCII characters.
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
fn fingerprint(customer: Uuid, key: &str, request: &PlaceOrder) -> String {
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

fn problem_json(error: &OrderError) -> serde_json::Value {
    serde_json::to_value(web::Problem::from_error(error).body()).unwrap_or_default()
}

#[derive(diesel::QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = Text)]
    fingerprint: String,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    order_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Integer>)]
    response_status: Option<i32>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    response_body: Option<serde_json::Value>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    stale: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    expired: bool,
}

impl OrderModule {
    /// Orders over `pool`, calling `deps`.
    pub fn new(pool: Pool, deps: Dependencies, settings: Settings) -> OrderModule {
        OrderModule {
            pool,
            deps,
            settings,
            instance: Uuid::now_v7(),
        }
    }

    pub(crate) async fn conn(&self) -> Result<db::Object, OrderError> {
        db::connection(&self.pool, crate::NAME)
            .await
            .map_err(unavailable)
    }

    /// Deletes idempotency keys older than `idempotency_retention_hours`;
    /// how many.
    ///
    /// # Errors
    /// Database unavailability.
    pub async fn prune_idempotency_keys(&self) -> Result<usize, OrderError> {
        let mut conn = self.conn().await?;
        db::sql(
            "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1)",
        )
        .bind::<diesel::sql_types::Integer, _>(
            i32::try_from(self.settings.idempotency_retention_hours).unwrap_or(i32::MAX),
        )
        .execute(&mut conn)
        .await
        .map_err(database)
    }

    /// The caller's cart (empty when never set).
    ///
    /// # Errors
    /// [`OrderError::Unauthenticated`]; database unavailability.
    pub async fn cart(&self, cx: &CallContext) -> Result<Cart, OrderError> {
        let customer = caller(cx)?.user_id;
        #[derive(diesel::QueryableByName)]
        struct Items {
            #[diesel(sql_type = Jsonb)]
            items: serde_json::Value,
        }
        let mut conn = self.conn().await?;
        let found: Vec<Items> = db::sql("SELECT items FROM carts WHERE customer_id = $1")
            .bind::<SqlUuid, _>(customer)
            .load(&mut conn)
            .await
            .map_err(database)?;
        let items = match found.into_iter().next() {
            Some(row) => serde_json::from_value(row.items)
                .map_err(|e| OrderError::Unexpected(format!("stored cart: {e}")))?,
            None => Vec::new(),
        };
        Ok(Cart { items })
    }

    /// Replaces the caller's cart.
    ///
    /// # Errors
    /// [`OrderError::Validation`]: quantities outside 1..=100, a product
    /// twice, too many lines, unknown or unavailable products.
    pub async fn put_cart(&self, cx: &CallContext, cart: Cart) -> Result<Cart, OrderError> {
        let customer = caller(cx)?.user_id;
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
        if errors.is_empty() {
            for (i, item) in cart.items.iter().enumerate() {
                match self
                    .deps
                    .catalog
                    .get_product(cx, ProductId::from(item.product_id))
                    .await
                {
                    Ok(product) if product.active => {}
                    Ok(_) | Err(CatalogError::ProductNotFound(_)) => errors.push(FieldError::new(
                        format!("items[{i}].product_id"),
                        "no such product for sale",
                    )),
                    Err(e) => return Err(catalog_error(e)),
                }
            }
        }
        if !errors.is_empty() {
            return Err(OrderError::Validation(errors));
        }
        let json =
            serde_json::to_value(&cart.items).map_err(|e| OrderError::Unexpected(e.to_string()))?;
        let mut conn = self.conn().await?;
        db::sql(
            "INSERT INTO carts (customer_id, items) VALUES ($1, $2) \
             ON CONFLICT (customer_id) DO UPDATE SET items = EXCLUDED.items, updated_at = now()",
        )
        .bind::<SqlUuid, _>(customer)
        .bind::<Jsonb, _>(json)
        .execute(&mut conn)
        .await
        .map_err(database)?;
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
        let fingerprint = fingerprint(customer, key, &request);
        if let Some(outcome) = self.claim_key(customer, key, &fingerprint).await? {
            return Ok(outcome);
        }
        let outcome = match self.checkout(cx, customer, key, request).await {
            Ok((state, saga)) => self.respond_placed(state, saga).await,
            Err(error) if kernel::ProblemCode::status(&error) >= 500 => {
                // Not an answer about this request (a dependency was down,
                // nothing was created): the key is freed for a retry.
                self.forget_key(customer, key).await?;
                return Err(error);
            }
            Err(error) => PlaceOutcome {
                status: kernel::ProblemCode::status(&error),
                body: problem_json(&error),
                location: None,
                replayed: false,
            },
        };
        self.store_response(customer, key, &outcome).await?;
        Ok(outcome)
    }

    /// Takes the key for this request, or answers from it: the stored
    /// response, 422 for another body, 409 while the first runs.
    async fn claim_key(
        &self,
        customer: Uuid,
        key: &str,
        fingerprint: &str,
    ) -> Result<Option<PlaceOutcome>, OrderError> {
        let mut conn = self.conn().await?;
        for _ in 0..3 {
            let inserted = db::sql(
                "INSERT INTO idempotency_keys (customer_id, key, fingerprint) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind::<SqlUuid, _>(customer)
            .bind::<Text, _>(key)
            .bind::<Text, _>(fingerprint)
            .execute(&mut conn)
            .await
            .map_err(database)?;
            if inserted == 1 {
                return Ok(None);
            }
            let found: Vec<KeyRow> = db::sql(format!(
                "SELECT fingerprint, order_id, response_status, response_body, \
                 created_at < now() - interval '{} seconds' AS stale, \
                 created_at < now() - interval '24 hours' AS expired \
                 FROM idempotency_keys WHERE customer_id = $1 AND key = $2",
                self.settings.idempotency_stale_secs
            ))
            .bind::<SqlUuid, _>(customer)
            .bind::<Text, _>(key)
            .load(&mut conn)
            .await
            .map_err(database)?;
            let Some(row) = found.into_iter().next() else {
                continue; // deleted meanwhile: try to take it again
            };
            if row.expired {
                // Keys live 24 hours; then the key is new again.
                self.forget_key(customer, key).await?;
                continue;
            }
            if row.fingerprint != fingerprint {
                return Err(OrderError::IdempotencyKeyReused);
            }
            match (row.response_status, row.response_body) {
                (Some(status), Some(body)) => {
                    let location = body
                        .get("id")
                        .and_then(|id| id.as_str())
                        .filter(|_| matches!(status, 201 | 202))
                        .map(|id| format!("/api/v1/orders/{id}"));
                    return Ok(Some(PlaceOutcome {
                        status: u16::try_from(status).unwrap_or(500),
                        body,
                        location,
                        replayed: true,
                    }));
                }
                _ if row.stale => {
                    // The first request died mid-way (its process crashed).
                    match row.order_id {
                        Some(order) => {
                            // The order exists and its saga recovers on its
                            // own: answer with it from now on.
                            let order = self.load_order(OrderId::from(order)).await?;
                            let outcome = self.respond_with(order).await;
                            self.store_response(customer, key, &outcome).await?;
                            return Ok(Some(PlaceOutcome {
                                replayed: true,
                                ..outcome
                            }));
                        }
                        None => {
                            self.forget_key(customer, key).await?;
                            continue;
                        }
                    }
                }
                _ => return Err(OrderError::IdempotencyKeyInUse),
            }
        }
        Err(OrderError::IdempotencyKeyInUse)
    }

    async fn forget_key(&self, customer: Uuid, key: &str) -> Result<(), OrderError> {
        let mut conn = self.conn().await?;
        db::sql("DELETE FROM idempotency_keys WHERE customer_id = $1 AND key = $2")
            .bind::<SqlUuid, _>(customer)
            .bind::<Text, _>(key)
            .execute(&mut conn)
            .await
            .map_err(database)?;
        Ok(())
    }

    async fn store_response(
        &self,
        customer: Uuid,
        key: &str,
        outcome: &PlaceOutcome,
    ) -> Result<(), OrderError> {
        let mut conn = self.conn().await?;
        db::sql(
            "UPDATE idempotency_keys SET response_status = $3, response_body = $4 \
             WHERE customer_id = $1 AND key = $2",
        )
        .bind::<SqlUuid, _>(customer)
        .bind::<Text, _>(key)
        .bind::<Integer, _>(i32::from(outcome.status))
        .bind::<Jsonb, _>(&outcome.body)
        .execute(&mut conn)
        .await
        .map_err(database)?;
        Ok(())
    }

    /// Runs the saga for a while, then answers 201 when it is over (the
    /// order confirmed or failed) or 202 while it still runs.
    async fn respond_with(&self, order: Order) -> PlaceOutcome {
        let id = order.id;
        let driver = self.clone();
        self.respond_after(order, async move { driver.drive(id).await })
            .await
    }

    /// [`Self::respond_with`] for an order this instance just placed: its
    /// saga is driven from what the placing transaction wrote.
    async fn respond_placed(&self, state: OrderState, saga: SagaRow) -> PlaceOutcome {
        let order = state.to_order();
        let driver = self.clone();
        self.respond_after(order, async move {
            driver.drive_placed(state.id, state, saga).await
        })
        .await
    }

    async fn respond_after(
        &self,
        order: Order,
        driving: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> PlaceOutcome {
        let id = order.id;
        let wait = Duration::from_millis(self.settings.checkout_wait_ms);
        // The saga runs on in the background; its spans stay in the request's trace.
        let driving = tokio::spawn(driving.in_current_span());
        let order = match tokio::time::timeout(wait, driving).await {
            Ok(_) => self.load_order(id).await.unwrap_or(order),
            Err(_) => order,
        };
        let settled = matches!(
            order.status,
            OrderStatus::Confirmed | OrderStatus::Failed | OrderStatus::Cancelled
        );
        PlaceOutcome {
            status: if settled { 201 } else { 202 },
            body: serde_json::to_value(&order).unwrap_or_default(),
            location: Some(format!("/api/v1/orders/{id}")),
            replayed: false,
        }
    }

    /// Prices the cart from the catalog, tokenizes the card and records the
    /// order with its saga, in one transaction with the key.
    async fn checkout(
        &self,
        cx: &CallContext,
        customer: Uuid,
        key: &str,
        request: PlaceOrder,
    ) -> Result<(OrderState, SagaRow), OrderError> {
        let cart = self.cart(cx).await?;
        if cart.items.is_empty() {
            return Err(OrderError::Validation(vec![FieldError::new(
                "cart",
                "is empty: PUT /api/v1/cart first",
            )]));
        }
        let lines = self.price(cx, &cart.items).await?;
        let mut total_minor = 0i64;
        let currency = lines[0].unit_price.currency();
        for line in &lines {
            if line.line_total.currency() != currency {
                return Err(OrderError::Validation(vec![FieldError::new(
                    "cart",
                    "holds products priced in different currencies",
                )]));
            }
            total_minor = total_minor.saturating_add(line.line_total.amount_minor());
        }
        let total = Money::new(total_minor, currency);
        let services = self
            .deps
            .services
            .context(cx.request_id().clone())
            .map_err(|e| OrderError::Unexpected(format!("service token: {e}")))?;
        let method = self
            .deps
            .payment
            .tokenize(
                &services,
                Tokenize {
                    card_number: request.payment_method.card_number.clone(),
                },
            )
            .await
            .map_err(|e| match e {
                PaymentError::Validation(errors) => OrderError::Validation(
                    errors
                        .into_iter()
                        .map(|e| FieldError::new("payment_method.card_number", e.message))
                        .collect(),
                ),
                PaymentError::Declined(code) => OrderError::CardRejected(code),
                PaymentError::Degraded(d) => OrderError::Degraded(d),
                PaymentError::Unavailable(reason) => OrderError::Unavailable(reason),
                other => OrderError::Unexpected(other.to_string()),
            })?;
        let order = OrderId::generate();
        let placed = OrderEvent::Placed {
            customer_id: customer,
            lines,
            total,
            card_last4: method.card_last4.clone(),
        };
        let lease = i64::try_from(self.settings.lease_secs).unwrap_or(30);
        let mut conn = self.conn().await?;
        let state = conn
            .transaction::<_, DieselError, _>(async |conn| {
                let state = store::create(conn, order, &placed, cx).await?;
                // The first step, reserve, begins with the order (intent
                // recorded as `begin` would, lease held by this instance).
                db::sql(format!(
                    "INSERT INTO sagas (order_id, direction, payment_method, card_last4, request_id, \
                     lease_owner, lease_until, step, reserve_attempted) \
                     VALUES ($1, 'forward', $2, $3, $4, $5, now() + interval '{lease} seconds', 'reserve', true)"
                ))
                .bind::<SqlUuid, _>(order.as_uuid())
                .bind::<Text, _>(&method.token)
                .bind::<Text, _>(&method.card_last4)
                .bind::<Text, _>(cx.request_id().to_string())
                .bind::<SqlUuid, _>(self.instance)
                .execute(conn)
                .await?;
                db::sql(
                    "UPDATE idempotency_keys SET order_id = $3 WHERE customer_id = $1 AND key = $2",
                )
                .bind::<SqlUuid, _>(customer)
                .bind::<Text, _>(key)
                .bind::<SqlUuid, _>(order.as_uuid())
                .execute(conn)
                .await?;
                db::sql("DELETE FROM carts WHERE customer_id = $1")
                    .bind::<SqlUuid, _>(customer)
                    .execute(conn)
                    .await?;
                Ok(state)
            })
            .await
            .map_err(database)?;
        metrics::counter!("orders_placed_total").increment(1);
        tracing::info!(order.id = %order, total = total.amount_minor(), "order placed");
        let saga = SagaRow {
            direction: store::Direction::Forward,
            outcome: None,
            reason: None,
            payment_method: method.token,
            card_last4: method.card_last4,
            reserve_attempted: true,
            payment_attempted: false,
            request_id: Some(cx.request_id().to_string()),
            done: false,
            attempts: 0,
            step: Some("reserve".into()),
        };
        Ok((state, saga))
    }

    async fn price(
        &self,
        cx: &CallContext,
        items: &[CartItem],
    ) -> Result<Vec<OrderLine>, OrderError> {
        let mut lines = Vec::with_capacity(items.len());
        let mut errors = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match self
                .deps
                .catalog
                .get_product(cx, ProductId::from(item.product_id))
                .await
            {
                Ok(product) if product.active => {
                    let line_total = Money::new(
                        product
                            .price
                            .amount_minor()
                            .saturating_mul(i64::from(item.quantity)),
                        product.price.currency(),
                    );
                    lines.push(OrderLine {
                        product_id: product.id,
                        sku: product.sku.clone(),
                        name: product.name,
                        unit_price: product.price,
                        quantity: item.quantity,
                        line_total,
                    });
                }
                Ok(_) | Err(CatalogError::ProductNotFound(_)) => errors.push(FieldError::new(
                    format!("cart.items[{i}].product_id"),
                    "is no longer for sale: update the cart",
                )),
                Err(e) => return Err(catalog_error(e)),
            }
        }
        if errors.is_empty() {
            Ok(lines)
        } else {
            Err(OrderError::Validation(errors))
        }
    }

    pub(crate) async fn load_order(&self, order: OrderId) -> Result<Order, OrderError> {
        let mut conn = self.conn().await?;
        store::load_state(&mut conn, order, false)
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
    /// [`OrderError::InvalidCursor`] for a cursor of another list.
    pub async fn orders(
        &self,
        cx: &CallContext,
        limit: PageLimit,
        cursor: Option<Cursor>,
    ) -> Result<Page<Order>, OrderError> {
        let customer = caller(cx)?.user_id;
        let after = Cursor::after_id(cursor.as_ref()).map_err(|_| OrderError::InvalidCursor)?;
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = Jsonb)]
            state: serde_json::Value,
        }
        let mut conn = self.conn().await?;
        let rows: Vec<Row> = db::sql(
            "SELECT state FROM orders WHERE customer_id = $1 AND ($2::uuid IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3",
        )
        .bind::<SqlUuid, _>(customer)
        .bind::<Nullable<SqlUuid>, _>(after)
        .bind::<diesel::sql_types::BigInt, _>(limit.overfetch())
        .load(&mut conn)
        .await
        .map_err(database)?;
        let orders = rows
            .into_iter()
            .map(|r| {
                serde_json::from_value::<crate::model::OrderState>(r.state)
                    .map(|s| s.to_order())
                    .map_err(|e| OrderError::Unexpected(format!("stored order: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
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
        store::timeline(&mut conn, id).await.map_err(database)
    }

    /// Cancels an order not yet shipped: the saga turns round and gives
    /// everything back (void or refund, release or restock).
    ///
    /// # Errors
    /// [`OrderError::InvalidTransition`] for a shipped, failed or cancelled order.
    pub async fn cancel(&self, cx: &CallContext, id: OrderId) -> Result<Order, OrderError> {
        let caller = caller(cx)?.clone();
        self.order(cx, id).await?;
        let reason = if caller.has(Role::Admin) {
            "cancelled by the shop".to_owned()
        } else {
            "cancelled by the customer".to_owned()
        };
        let mut conn = self.conn().await?;
        conn.transaction::<_, AppendError, _>(async |conn| {
            let saga = store::load_saga(conn, id, true).await?;
            let state = store::load_state(conn, id, true)
                .await?
                .ok_or(AppendError::NotFound)?;
            if state.status.is_final() || state.status == OrderStatus::Shipped {
                return Err(AppendError::Refused(state.status.to_string()));
            }
            if saga.direction == store::Direction::Compensate {
                return Ok(()); // already being undone
            }
            db::sql(
                "UPDATE sagas SET direction = 'compensate', outcome = 'cancelled', reason = $2, \
                 done = false, attempts = 0, next_attempt_at = now(), updated_at = now() WHERE order_id = $1",
            )
            .bind::<SqlUuid, _>(id.as_uuid())
            .bind::<Text, _>(&reason)
            .execute(conn)
            .await?;
            store::append(conn, id, &OrderEvent::CancellationRequested { reason: reason.clone() }, cx)
                .await?;
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
        let driver = self.clone();
        let driving = tokio::spawn(async move { driver.drive(id).await }.in_current_span());
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
    /// [`OrderError::Forbidden`]; [`OrderError::InvalidTransition`] unless confirmed.
    pub async fn ship(&self, cx: &CallContext, id: OrderId) -> Result<Order, OrderError> {
        if !caller(cx)?.has(Role::Admin) {
            return Err(OrderError::Forbidden);
        }
        let mut conn = self.conn().await?;
        let state = conn
            .transaction::<_, AppendError, _>(async |conn| {
                let saga = store::load_saga(conn, id, true).await.map_err(|e| {
                    if e == DieselError::NotFound {
                        AppendError::NotFound
                    } else {
                        AppendError::Db(e)
                    }
                })?;
                if saga.direction != store::Direction::Forward {
                    return Err(AppendError::Refused("being cancelled".into()));
                }
                store::append(conn, id, &OrderEvent::Shipped, cx).await
            })
            .await
            .map_err(|e| match e {
                AppendError::Refused(why) => OrderError::InvalidTransition {
                    status: why,
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
        #[derive(diesel::QueryableByName)]
        struct Id {
            #[diesel(sql_type = SqlUuid)]
            order_id: Uuid,
        }
        let mut conn = self.conn().await?;
        let ids: Vec<Id> = db::sql("SELECT DISTINCT order_id FROM order_events")
            .load(&mut conn)
            .await
            .map_err(database)?;
        for id in &ids {
            let order = OrderId::from(id.order_id);
            conn.transaction::<_, DieselError, _>(async |conn| {
                store::load_state(conn, order, true).await?;
                store::rebuild(conn, order).await?;
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
        let stored = store::load_state(conn, id, false).await.map_err(database)?;
        let folded = store::fold(conn, id).await.map_err(database)?;
        match (stored, folded) {
            (Some(stored), Some(folded)) => Ok(stored == folded),
            _ => Err(OrderError::NotFound),
        }
    }
}
