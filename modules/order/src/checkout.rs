//! [`Checkout`]: placing an order under an idempotency key (Stripe's
//! semantics: the first answer is kept and replayed), pricing the cart,
//! tokenizing the card, and recording the order with its saga in one
//! transaction; the saga ([`crate::saga`]) then runs it.

use std::time::Duration;

use catalog_api::{CatalogError, ProductId};
use diesel_async::{AsyncConnection as _, AsyncPgConnection};
use kernel::{CallContext, Failure, FieldError, OrderId};
use order_api::OrderStatus;
use payment_api::{PaymentError, Tokenize};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::domain::{self, OrderEvent, OrderState};
use crate::error::OrderError;
use crate::model::{Cart, CartItem, Order, OrderLine, PlaceOrder};
use crate::repo::{self, Direction, SagaRow, carts, keys, sagas};
use crate::saga::{Reply, Saga};
use crate::service::{OrderModule, catalog_error, database, stored_cart};

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

fn problem_json(error: &OrderError) -> serde_json::Value {
    serde_json::to_value(web::Problem::from_error(error).body()).unwrap_or_default()
}

/// The idempotency key a request takes, with the fingerprint of its body.
pub(crate) struct Claim<'a> {
    pub(crate) customer: Uuid,
    pub(crate) key: &'a str,
    pub(crate) fingerprint: &'a str,
}

/// Places orders for a module: the idempotency keys, the pricing, the
/// first record. Made for each request.
pub(crate) struct Checkout<'a> {
    pub(crate) module: &'a OrderModule,
}

impl Checkout<'_> {
    fn saga(&self) -> &Saga {
        self.module.saga()
    }

    /// Places an order for the caller's cart under an idempotency key, runs
    /// the checkout saga for up to `order.checkout_wait_ms`, and answers as
    /// `POST /orders` does.
    pub(crate) async fn place(
        &self,
        cx: &CallContext,
        customer: Uuid,
        key: &str,
        request: PlaceOrder,
    ) -> Result<PlaceOutcome, OrderError> {
        let fingerprint = domain::fingerprint(customer, key, &request);
        let claim = Claim {
            customer,
            key,
            fingerprint: &fingerprint,
        };
        // A cart that changed between its read and the order's transaction
        // (another order took it, a `PUT /cart` replaced it) is read again
        // once: the request then orders what the cart holds by then, or is
        // answered as if it had come second (an empty cart).
        let mut tries = 0;
        let placed = loop {
            tries += 1;
            // The key and the cart, read at once: the cart is what a new
            // key orders.
            let (found, items) = {
                let stale_secs = self.module.settings.idempotency_stale_secs;
                let mut conn = self.module.conn().await?;
                keys::find_with_cart(&mut conn, customer, key, stale_secs)
                    .await
                    .map_err(database)?
            };
            if let Some(outcome) = self.answer_from(found, customer, key, &fingerprint).await? {
                return Ok(outcome);
            }
            let cart = stored_cart(items.as_ref())?;
            match self
                .checkout(cx, &claim, &request, cart, items.as_ref())
                .await
            {
                Err(OrderError::CartChanged) if tries < 2 => continue,
                placed => break placed,
            }
        };
        let outcome = match placed {
            Ok(None) => {
                // Another request with this key took it meanwhile.
                return self.answer_taken(customer, key, &fingerprint).await;
            }
            Ok(Some((state, saga, run))) => {
                let reply = Reply {
                    customer,
                    key: key.to_owned(),
                };
                let (outcome, kept) = self.respond_placed(run, state, saga, reply).await;
                if kept {
                    // The saga's last step kept this answer with the order.
                    return Ok(outcome);
                }
                outcome
            }
            // Not an answer about this request (a dependency was down, the
            // cart kept changing; nothing was created): nothing is kept, a
            // retry may succeed.
            Err(error)
                if kernel::ProblemCode::status(&error) >= 500
                    || error == OrderError::CartChanged =>
            {
                return Err(error);
            }
            Err(error) => {
                let outcome = PlaceOutcome {
                    status: kernel::ProblemCode::status(&error),
                    body: problem_json(&error),
                    location: None,
                    replayed: false,
                };
                let mut conn = self.module.conn().await?;
                let (status, body) = (outcome.status, &outcome.body);
                let kept = keys::claim_answered(&mut conn, &claim, status, body)
                    .await
                    .map_err(database)?;
                if kept {
                    return Ok(outcome);
                }
                drop(conn);
                // Another request with this key took it meanwhile.
                return self.answer_taken(customer, key, &fingerprint).await;
            }
        };
        self.store_response(customer, key, &outcome).await?;
        Ok(outcome)
    }

    /// The answer of a key another request took while this one ran (409
    /// if it is gone again meanwhile).
    async fn answer_taken(
        &self,
        customer: Uuid,
        key: &str,
        fingerprint: &str,
    ) -> Result<PlaceOutcome, OrderError> {
        self.answer_from_key(customer, key, fingerprint)
            .await?
            .ok_or(OrderError::IdempotencyKeyInUse)
    }

    /// The answer a key gives, if it is taken: the stored response, 422
    /// for another body, 409 while the first request runs (`None`: the key
    /// is free, or free again after its 24 hours). The key is taken with
    /// the order it creates ([`Self::checkout`]) or with the 4xx answer
    /// given instead, so a key is never held by a request that made
    /// nothing; one whose order exists but whose request died before
    /// answering is answered from the order once stale.
    async fn answer_from_key(
        &self,
        customer: Uuid,
        key: &str,
        fingerprint: &str,
    ) -> Result<Option<PlaceOutcome>, OrderError> {
        let stale_secs = self.module.settings.idempotency_stale_secs;
        let found = {
            let mut conn = self.module.conn().await?;
            keys::find(&mut conn, customer, key, stale_secs)
                .await
                .map_err(database)?
        };
        self.answer_from(found, customer, key, fingerprint).await
    }

    /// [`Self::answer_from_key`] for the key as `found`.
    async fn answer_from(
        &self,
        found: Option<keys::KeyRow>,
        customer: Uuid,
        key: &str,
        fingerprint: &str,
    ) -> Result<Option<PlaceOutcome>, OrderError> {
        let Some(row) = found else {
            return Ok(None);
        };
        if row.expired {
            // Keys live 24 hours; then the key is new again.
            self.forget_key(customer, key, keys::Forget::Expired)
                .await?;
            return Ok(None);
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
                Ok(Some(PlaceOutcome {
                    status: u16::try_from(status).unwrap_or(500),
                    body,
                    location,
                    replayed: true,
                }))
            }
            _ if row.stale => match row.order_id {
                // The first request died before answering (its process
                // crashed); the order exists and its saga recovers on its
                // own: answer with it from now on.
                Some(order) => {
                    let order = self.module.load_order(OrderId::from(order)).await?;
                    let outcome = self.respond_with(order).await;
                    self.store_response(customer, key, &outcome).await?;
                    Ok(Some(PlaceOutcome {
                        replayed: true,
                        ..outcome
                    }))
                }
                // A key taken by an older version before its order: free.
                None => {
                    let stale_secs = self.module.settings.idempotency_stale_secs;
                    let abandoned = keys::Forget::Abandoned { stale_secs };
                    self.forget_key(customer, key, abandoned).await?;
                    Ok(None)
                }
            },
            _ => Err(OrderError::IdempotencyKeyInUse),
        }
    }

    async fn forget_key(
        &self,
        customer: Uuid,
        key: &str,
        which: keys::Forget,
    ) -> Result<(), OrderError> {
        let mut conn = self.module.conn().await?;
        keys::forget(&mut conn, customer, key, which)
            .await
            .map_err(database)
    }

    async fn store_response(
        &self,
        customer: Uuid,
        key: &str,
        outcome: &PlaceOutcome,
    ) -> Result<(), OrderError> {
        let mut conn = self.module.conn().await?;
        keys::store_response(&mut conn, customer, key, outcome.status, &outcome.body)
            .await
            .map_err(database)
    }

    /// Runs the saga for a while, then answers 201 when it is over (the
    /// order confirmed, failed or cancelled) or 202 while it still runs.
    async fn respond_with(&self, order: Order) -> PlaceOutcome {
        let id = order.id;
        let saga = self.saga().clone();
        self.respond_after(order, async move {
            saga.drive(id).await;
            None
        })
        .await
        .0
    }

    /// [`Self::respond_with`] for an order `run` just placed: its saga is
    /// driven by that run from what the placing transaction wrote. True
    /// when the saga finished within the wait, its last step keeping the
    /// answer under `reply`'s key.
    async fn respond_placed(
        &self,
        run: Saga,
        state: OrderState,
        row: SagaRow,
        reply: Reply,
    ) -> (PlaceOutcome, bool) {
        let order = state.to_order();
        self.respond_after(order, async move {
            run.drive_placed(state.order.id, state, row, reply)
                .await
                .map(|finished| finished.to_order())
        })
        .await
    }

    /// The answer once `driving` is over or the wait is, and whether
    /// `driving` finished the saga (then it gave the order as committed).
    async fn respond_after(
        &self,
        order: Order,
        driving: impl std::future::Future<Output = Option<Order>> + Send + 'static,
    ) -> (PlaceOutcome, bool) {
        let id = order.id;
        let wait = Duration::from_millis(self.module.settings.checkout_wait_ms);
        // The saga runs on in the background; its spans stay in the request's trace.
        let driving = tokio::spawn(driving.in_current_span());
        let (order, finished) = match tokio::time::timeout(wait, driving).await {
            // Finished by this drive: the order as it committed it.
            Ok(Ok(Some(finished))) => (finished, true),
            // Waiting for a retry, or driven elsewhere: as it stands now.
            Ok(_) => (self.module.load_order(id).await.unwrap_or(order), false),
            Err(_) => (order, false),
        };
        let settled = matches!(
            order.status,
            OrderStatus::Confirmed | OrderStatus::Failed | OrderStatus::Cancelled
        );
        let outcome = PlaceOutcome {
            status: if settled { 201 } else { 202 },
            body: serde_json::to_value(&order).unwrap_or_default(),
            location: Some(format!("/api/v1/orders/{id}")),
            replayed: false,
        };
        (outcome, finished)
    }

    /// Prices the `cart` from the catalog, tokenizes the card and records
    /// the order with its saga, in one transaction with the key it takes
    /// (`None`: another request took the key first; nothing was recorded),
    /// leased to the run of the saga it returns.
    async fn checkout(
        &self,
        cx: &CallContext,
        claim: &Claim<'_>,
        request: &PlaceOrder,
        cart: Cart,
        items: Option<&serde_json::Value>,
    ) -> Result<Option<(OrderState, SagaRow, Saga)>, OrderError> {
        let customer = claim.customer;
        let Some(items) = items.filter(|_| !cart.items.is_empty()) else {
            return Err(OrderError::Common(Failure::Validation(vec![
                FieldError::new("cart", "is empty: PUT /api/v1/cart first"),
            ])));
        };
        let services = self.module.on_behalf(cx)?;
        let lines = self.price(&services, &cart.items).await?;
        let total = domain::total(&lines)?;
        let card_number = request.payment_method.card_number.clone();
        let method = self
            .module
            .deps
            .payment
            .tokenize(&services, Tokenize { card_number })
            .await
            .map_err(tokenize_error)?;
        let order = OrderId::generate();
        let placed = OrderEvent::Placed {
            customer_id: customer,
            lines,
            total,
            card_last4: method.card_last4.clone(),
        };
        let request_id = cx.request_id().to_string();
        let run = self.saga().new_run();
        let owner = run.owner();
        let lease = self.module.settings.lease_secs;
        let mut conn = self.module.conn().await?;
        let created = conn
            .transaction::<_, db::Abort<Refused>, _>(async |conn| {
                let conn: &AsyncPgConnection = conn;
                // The first step, reserve, begins with the order (intent
                // recorded as `begin` would, lease held by this run).
                let (token, last4) = (&method.token, &method.card_last4);
                // Pipelined, one round trip (ADR 0015). The key
                // first: a request with the same key waits there for this
                // transaction, then finds the key taken, and rolls back
                // what it wrote after.
                let (claimed, state, saga, cart) = futures_util::future::join4(
                    keys::claim_for(conn, claim, order),
                    repo::create(conn, order, &placed, cx),
                    sagas::insert(conn, order, token, last4, &request_id, owner, lease),
                    carts::take(conn, customer, items),
                )
                .await;
                if !claimed? {
                    return Err(db::Abort::Refuse(Refused::KeyTaken));
                }
                let state = state?;
                saga?;
                if !cart? {
                    return Err(db::Abort::Refuse(Refused::CartChanged));
                }
                Ok(state)
            })
            .await;
        let state = match created {
            Ok(state) => state,
            Err(db::Abort::Refuse(Refused::KeyTaken)) => return Ok(None),
            Err(db::Abort::Refuse(Refused::CartChanged)) => return Err(OrderError::CartChanged),
            Err(db::Abort::Db(e)) => return Err(database(e)),
        };
        metrics::counter!("orders_placed_total").increment(1);
        tracing::info!(order.id = %order, total = total.amount_minor(), "order placed");
        let saga = SagaRow {
            direction: Direction::Forward,
            outcome: None,
            reason: None,
            payment_method: method.token,
            card_last4: method.card_last4,
            reserve_attempted: true,
            payment_attempted: true,
            request_id: Some(request_id),
            done: false,
            attempts: 0,
            step: Some("reserve".into()),
        };
        Ok(Some((state, saga, run)))
    }

    /// The cart's lines at the catalog's prices; validation errors for
    /// products no longer for sale.
    async fn price(
        &self,
        cx: &CallContext,
        items: &[CartItem],
    ) -> Result<Vec<OrderLine>, OrderError> {
        let mut lines = Vec::with_capacity(items.len());
        let mut errors = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match self
                .module
                .deps
                .catalog
                .get_product(cx, ProductId::from(item.product_id))
                .await
            {
                Ok(product) if product.active => {
                    let Some(line_total) = domain::line_total(product.price, item.quantity) else {
                        errors.push(FieldError::new(
                            format!("cart.items[{i}].quantity"),
                            "comes to more than a line's total can hold at this price",
                        ));
                        continue;
                    };
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
            Err(OrderError::Common(Failure::Validation(errors)))
        }
    }
}

/// The payment module's refusal to tokenize, as the order routes answer it.
fn tokenize_error(error: PaymentError) -> OrderError {
    match error {
        PaymentError::Common(Failure::Validation(errors)) => {
            OrderError::Common(Failure::Validation(
                errors
                    .into_iter()
                    .map(|e| FieldError::new("payment_method.card_number", e.message))
                    .collect(),
            ))
        }
        PaymentError::Declined(code) => OrderError::CardRejected(code),
        // Out of time or down: the order module's own outage, as it is.
        PaymentError::Common(failure @ (Failure::Degraded(_) | Failure::Unavailable(_))) => {
            failure.into()
        }
        other => OrderError::Common(Failure::Unexpected(other.to_string())),
    }
}

/// Why the order's transaction refuses; nothing of it is kept.
enum Refused {
    /// Another request took the key first.
    KeyTaken,
    /// The cart is not what was priced any more ([`carts::take`]).
    CartChanged,
}
