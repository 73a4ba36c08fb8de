//! [`PaymentModule`]: the in-process implementation of [`PaymentApi`].
//!
//! A payment is one row per order, moved by conditional `UPDATE`s
//! (`WHERE status = <expected>`), each with its ledger line in the same
//! transaction; a step repeated (a retry, a resumed saga, two racing
//! callers) finds the row already moved and changes nothing. The provider
//! is called outside any transaction, with a key derived from the order, so
//! asking again after a crash answers the same authorization.

use std::sync::Arc;

use db::Pool;
use diesel::result::Error as DieselError;
use kernel::{CallContext, Failure, OrderId, Role};
use payment_api::{
    AuthorizePayment, Payment, PaymentApi, PaymentError, PaymentId, PaymentMethod, PaymentStatus,
    Tokenize,
};

use crate::domain::{self, AtProvider};
use crate::provider::{PaymentProvider, ProviderError};
use crate::repo::{self, Key, Step, Stored};

/// The reason recorded on a payment whose authorization a void gave up
/// waiting for (the provider did not answer).
const ABANDONED: &str = "authorization_outcome_unknown";

/// Payments, served from this process's database pool.
#[derive(Clone)]
pub struct PaymentModule {
    pool: Pool,
    provider: Arc<dyn PaymentProvider>,
    recent: Arc<Recent>,
}

/// The authorizations this process recorded lately, by order, with the
/// provider's id of each: the capture that follows within milliseconds
/// (the checkout's next steps) starts from here instead of reading the
/// payment again. Reading it would guard nothing more: the capture's
/// record is conditional (`WHERE status = 'authorized'`) either way, a
/// payment moved meanwhile on another path is found moved by it, and a
/// provider that refuses the capture (a hold voided meanwhile) sends the
/// capture back to the read. Entries live a minute, a few thousand at most;
/// another instance, or a restart, simply reads.
#[derive(Default)]
struct Recent(std::sync::Mutex<std::collections::HashMap<OrderId, Authorized>>);

/// A recorded authorization ([`Recent`]).
struct Authorized {
    payment: Payment,
    provider_id: String,
    at: std::time::Instant,
}

impl Recent {
    const MAX: usize = 4096;
    const TTL: std::time::Duration = std::time::Duration::from_secs(60);

    fn remember(&self, payment: &Payment, provider_id: &str) {
        let Ok(mut recent) = self.0.lock() else {
            return;
        };
        if recent.len() >= Self::MAX {
            recent.retain(|_, a| a.at.elapsed() < Self::TTL);
            if recent.len() >= Self::MAX {
                recent.clear();
            }
        }
        recent.insert(
            payment.order_id,
            Authorized {
                payment: payment.clone(),
                provider_id: provider_id.to_owned(),
                at: std::time::Instant::now(),
            },
        );
    }

    /// The authorization of `order`, forgotten here as it is handed out.
    fn take(&self, order: OrderId) -> Option<Authorized> {
        let mut recent = self.0.lock().ok()?;
        recent.remove(&order).filter(|a| a.at.elapsed() < Self::TTL)
    }
}

/// A failed statement, as this module answers it (`db::query_failure`:
/// 503 when the database cannot answer now, 500 otherwise).
fn database(error: DieselError) -> PaymentError {
    db::query_failure(crate::NAME, error)
}

/// How long an order stays barred from authorization after a void found
/// no payment of it (`repo::bar`): far beyond any caller's deadline.
const BARRED_DAYS: i32 = 7;

/// Every minute until `stop` turns true, releases the holds of barred
/// authorizations that could not release them when they met the bar
/// ([`PaymentModule::release_barred_holds`]); every hour, forgets the bars
/// older than [`BARRED_DAYS`] ([`PaymentModule::forget_old_bars`]).
pub(crate) async fn upkeep(module: PaymentModule, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = std::time::Duration::from_secs(60);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick: u64 = 0;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        tick += 1;
        match module.release_barred_holds(every).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                released = n,
                "holds of authorizations made after their order's void released"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not release the holds of barred authorizations")
            }
        }
        if tick.is_multiple_of(60) {
            match module.forget_old_bars().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(forgotten = n, "old bars on voided orders forgotten"),
                Err(e) => tracing::warn!(error = %e, "could not forget old bars on voided orders"),
            }
        }
    }
}

fn provider_error(error: ProviderError) -> PaymentError {
    match error {
        ProviderError::Declined { code } | ProviderError::Rejected { code } => {
            PaymentError::Declined(code)
        }
        ProviderError::Unavailable(reason) => PaymentError::Common(Failure::Unavailable(reason)),
        ProviderError::Degraded(d) => PaymentError::Common(Failure::Degraded(d)),
    }
}

/// The steps (tokenize, authorize, capture, void, refund) are the order
/// module's (the `service` role): its saga owns each payment, and learns of
/// no step taken past it (an admin's refund left the order shippable).
fn require_service(cx: &CallContext) -> Result<(), PaymentError> {
    match cx.caller() {
        None => Err(PaymentError::Common(Failure::Unauthenticated)),
        Some(c) if !c.has(Role::Service) => Err(PaymentError::Common(Failure::Forbidden)),
        Some(_) => Ok(()),
    }
}

fn to_payment(stored: Stored) -> Result<(Payment, AtProvider), PaymentError> {
    stored
        .into_payment()
        .map_err(|e| Failure::Unexpected(e).into())
}

impl PaymentModule {
    /// Payments over `pool`, taken through `provider`.
    pub fn new(pool: Pool, provider: Arc<dyn PaymentProvider>) -> PaymentModule {
        PaymentModule {
            pool,
            provider,
            recent: Arc::default(),
        }
    }

    /// Settles again the payments still `authorizing`, opened more than
    /// `older_than` ago, whose order was barred: each met the bar when its
    /// authorization came back and could not void the hold then (the
    /// provider did not answer). The provider replays the authorization by
    /// its key and the hold is voided now. How many were released; the
    /// module's own job runs it every minute.
    ///
    /// # Errors
    /// The database cannot answer.
    pub async fn release_barred_holds(
        &self,
        older_than: std::time::Duration,
    ) -> Result<usize, PaymentError> {
        let orders = {
            let mut conn = self.conn().await?;
            repo::barred_authorizing(&mut conn, older_than, 100)
                .await
                .map_err(database)?
        };
        let mut released = 0;
        for order in orders {
            let order = OrderId::from(order);
            let (payment, at_provider) = self.with_provider_side(order).await?;
            match self.settle(&payment, &at_provider.method).await {
                Ok(settled) if settled.status == PaymentStatus::Voided => released += 1,
                // Declined on replay: no hold to release.
                Ok(_) | Err(Unsettled::Failed(PaymentError::Declined(_))) => {}
                // The provider refuses the release itself: asked again every
                // minute until the bar is forgotten; an operator should look.
                Err(Unsettled::HoldKept(PaymentError::Declined(code))) => {
                    tracing::warn!(order.id = %order, code, "the provider refuses to release the hold of a barred authorization");
                }
                Err(Unsettled::Failed(e) | Unsettled::HoldKept(e)) => {
                    tracing::warn!(order.id = %order, error = %e, "the hold of a barred authorization is still held; tried again next minute");
                }
            }
        }
        Ok(released)
    }

    /// Forgets the bars on orders voided before their payment
    /// ([`repo::bar`]) older than [`BARRED_DAYS`]; how many went. The
    /// module's own job runs it every hour.
    pub async fn forget_old_bars(&self) -> Result<usize, PaymentError> {
        let mut conn = self.conn().await?;
        repo::prune_bars(&mut conn, BARRED_DAYS)
            .await
            .map_err(database)
    }

    async fn conn(&self) -> Result<db::Object, PaymentError> {
        db::checkout(&self.pool, crate::NAME).await
    }

    /// The payment found by `key` and what the provider knows it by.
    async fn load(&self, key: Key) -> Result<(Payment, AtProvider), PaymentError> {
        let mut conn = self.conn().await?;
        let stored = repo::load(&mut conn, key)
            .await
            .map_err(database)?
            .ok_or(PaymentError::NotFound)?;
        to_payment(stored)
    }

    async fn by_order(&self, order: OrderId) -> Result<Payment, PaymentError> {
        Ok(self.with_provider_side(order).await?.0)
    }

    /// The payment of `order` and what the provider knows it by.
    async fn with_provider_side(
        &self,
        order: OrderId,
    ) -> Result<(Payment, AtProvider), PaymentError> {
        self.load(Key::Order(order)).await
    }

    /// Moves `payment` from `from` to `to` and writes the ledger line, once:
    /// a second caller finds it moved already (and gets it as it is now).
    async fn record(
        &self,
        payment: &Payment,
        from: PaymentStatus,
        to: PaymentStatus,
        provider_ref: Option<&str>,
        reason: Option<&str>,
    ) -> Result<Payment, PaymentError> {
        let order = payment.order_id;
        let step = Step {
            from,
            to,
            provider_ref,
            reason,
        };
        let moved = {
            let mut conn = self.conn().await?;
            repo::record(&mut conn, order, &step)
                .await
                .map_err(database)?
        };
        if moved.is_some() {
            metrics::counter!("payment_steps_total", "step" => to.as_str()).increment(1);
        }
        match moved.flatten() {
            // Moved here: the payment as it was, with its new line.
            Some(stored) => {
                let (mut moved, _) = to_payment(stored)?;
                let mut ledger = payment.ledger.clone();
                ledger.append(&mut moved.ledger);
                moved.ledger = ledger;
                Ok(moved)
            }
            None => self.by_order(order).await,
        }
    }

    /// The payment as the provider has it, after it refused a step (a
    /// capture, a void, a refund) on the authorization of `payment`. A hold
    /// can move without this row knowing in one way: a step whose answer was
    /// lost (a timeout, a crash before its record), or made by hand at the
    /// provider. The provider is asked, and the moves it made are recorded
    /// (captured, voided, refunded), so the caller answers from the state
    /// the money is really in: a capture meeting a voided hold is a 409
    /// (voided), not a decline; a void meeting a capture is "captured",
    /// which the saga refunds, instead of a refusal it would meet for ever.
    async fn caught_up(
        &self,
        payment: &Payment,
        authorization: &str,
    ) -> Result<Payment, PaymentError> {
        let found = self
            .provider
            .authorization(authorization)
            .await
            .map_err(provider_error)?;
        let moves: &[(PaymentStatus, PaymentStatus)] = match (payment.status, found.status.as_str())
        {
            (PaymentStatus::Authorized, "captured") => {
                &[(PaymentStatus::Authorized, PaymentStatus::Captured)]
            }
            (PaymentStatus::Authorized, "refunded") => &[
                (PaymentStatus::Authorized, PaymentStatus::Captured),
                (PaymentStatus::Captured, PaymentStatus::Refunded),
            ],
            (PaymentStatus::Authorized, "voided") => {
                &[(PaymentStatus::Authorized, PaymentStatus::Voided)]
            }
            (PaymentStatus::Captured, "refunded") => {
                &[(PaymentStatus::Captured, PaymentStatus::Refunded)]
            }
            _ => &[],
        };
        let mut now = payment.clone();
        for &(from, to) in moves {
            tracing::warn!(order.id = %payment.order_id, from = from.as_str(), to = to.as_str(), "the provider had moved the payment; recorded");
            now = self.record(&now, from, to, None, None).await?;
        }
        Ok(now)
    }

    /// The answer to a step (to `done`) the provider refused with `code`,
    /// from the payment caught up with the provider ([`Self::caught_up`]):
    /// the payment if the provider had made the step; a decline while the
    /// hold is as this row had it; else the state it is really in.
    async fn refused(
        &self,
        payment: &Payment,
        authorization: &str,
        code: String,
        done: PaymentStatus,
    ) -> Result<Payment, PaymentError> {
        let now = self.caught_up(payment, authorization).await?;
        if now.status == done {
            Ok(now)
        } else if now.status == payment.status {
            Err(PaymentError::Declined(code))
        } else {
            Err(PaymentError::InvalidTransition(now.status))
        }
    }

    /// Asks the provider for the authorization of a payment still
    /// `authorizing` (first time, or again after a crash or a timeout: the
    /// key is the same, so the provider answers the same authorization).
    async fn settle(&self, payment: &Payment, method: &str) -> Result<Payment, Unsettled> {
        let key = domain::authorization_key(payment.order_id);
        match self.provider.authorize(&key, payment.amount, method).await {
            Ok(authorization) => {
                let recorded = self
                    .record(
                        payment,
                        PaymentStatus::Authorizing,
                        PaymentStatus::Authorized,
                        Some(&authorization.id),
                        None,
                    )
                    .await?;
                match recorded.status {
                    PaymentStatus::Authorized => {
                        self.recent.remember(&recorded, &authorization.id);
                        Ok(recorded)
                    }
                    // Not moved, and still `authorizing`: the order was
                    // barred meanwhile (`repo::bar`), by a void that missed
                    // this payment's opening and answered "no payment".
                    // Nothing else would release this hold.
                    // If the provider does not answer the void, the payment
                    // stays `authorizing` and barred, for the minute job
                    // (`release_barred_holds`) or a void asked again: the
                    // hold is known, never given up as an unknown outcome.
                    PaymentStatus::Authorizing => {
                        self.provider
                            .void(&authorization.id)
                            .await
                            .map_err(|e| Unsettled::HoldKept(provider_error(e)))?;
                        tracing::warn!(order.id = %payment.order_id, "authorized after its order was voided; the hold was released");
                        Ok(self
                            .record(
                                payment,
                                PaymentStatus::Authorizing,
                                PaymentStatus::Voided,
                                Some(&authorization.id),
                                Some("order_voided_before_authorization"),
                            )
                            .await?)
                    }
                    // Voided while the provider answered: given up by a
                    // void that could not learn the outcome (`ABANDONED`).
                    // It is known now, so the hold is released rather than
                    // left to the card network's expiry (repeating a void
                    // the provider made already changes nothing).
                    PaymentStatus::Voided => {
                        if let Err(e) = self.provider.void(&authorization.id).await {
                            tracing::warn!(order.id = %payment.order_id, error = %e, "could not release the hold of an abandoned authorization; the card network will");
                        }
                        Ok(recorded)
                    }
                    _ => Ok(recorded),
                }
            }
            Err(ProviderError::Declined { code } | ProviderError::Rejected { code }) => {
                self.record(
                    payment,
                    PaymentStatus::Authorizing,
                    PaymentStatus::Declined,
                    None,
                    Some(&code),
                )
                .await?;
                Err(PaymentError::Declined(code).into())
            }
            Err(e) => Err(provider_error(e).into()),
        }
    }
}

/// Why [`PaymentModule::settle`] left a payment unsettled.
#[derive(Debug)]
enum Unsettled {
    /// As the error says: the provider's answer is still unknown, or it
    /// refused (recorded), or the database failed.
    Failed(PaymentError),
    /// The provider made the hold, the order was barred, and the hold's
    /// release failed: the payment stays `authorizing`, and the hold must
    /// not be given up as an unknown outcome (only barred `authorizing`
    /// payments are released by the minute job).
    HoldKept(PaymentError),
}

impl From<PaymentError> for Unsettled {
    fn from(error: PaymentError) -> Self {
        Unsettled::Failed(error)
    }
}

impl From<Unsettled> for PaymentError {
    fn from(unsettled: Unsettled) -> Self {
        match unsettled {
            Unsettled::Failed(e) | Unsettled::HoldKept(e) => e,
        }
    }
}

#[async_trait::async_trait]
impl PaymentApi for PaymentModule {
    async fn tokenize(
        &self,
        cx: &CallContext,
        request: Tokenize,
    ) -> Result<PaymentMethod, PaymentError> {
        require_service(cx)?;
        let digits = domain::card_digits(&request.card_number)?;
        let method = self
            .provider
            .tokenize(&digits)
            .await
            .map_err(provider_error)?;
        Ok(PaymentMethod {
            token: method.id,
            card_last4: method.card_last4,
        })
    }

    async fn authorize(
        &self,
        cx: &CallContext,
        request: AuthorizePayment,
    ) -> Result<Payment, PaymentError> {
        require_service(cx)?;
        domain::check_authorization(&request)?;
        let order = request.order_id;
        let inserted = {
            let mut conn = self.conn().await?;
            repo::insert(&mut conn, &request).await.map_err(database)?
        };
        let (payment, at_provider) = match inserted {
            Some(stored) => to_payment(stored)?,
            None => match self.with_provider_side(order).await {
                // Barred: the order was voided before this arrived.
                Err(PaymentError::NotFound) => {
                    return Err(PaymentError::InvalidTransition(PaymentStatus::Voided));
                }
                found => found?,
            },
        };
        // Another card is another payment. The same card may come with
        // another token (tokenized again by a caller retrying), so the
        // card's last four digits are compared, and the provider is always
        // asked with the token first stored: its idempotency key replays
        // only the same request (another body is refused, and was recorded
        // as a decline with the first hold left behind).
        if payment.amount != request.amount
            || payment.customer_id != request.customer_id
            || payment.card_last4 != request.payment_method.card_last4
        {
            return Err(PaymentError::Conflict);
        }
        match payment.status {
            PaymentStatus::Authorizing => {
                let settled = self.settle(&payment, &at_provider.method).await?;
                match settled.status {
                    PaymentStatus::Authorized | PaymentStatus::Captured => Ok(settled),
                    // Moved by another caller while the provider answered
                    // (a void that gave the attempt up): not authorized.
                    other => Err(PaymentError::InvalidTransition(other)),
                }
            }
            PaymentStatus::Declined => Err(PaymentError::Declined(
                payment.decline_code.unwrap_or_default(),
            )),
            PaymentStatus::Authorized | PaymentStatus::Captured => Ok(payment),
            // Voided (perhaps abandoned) or refunded: never again.
            other => Err(PaymentError::InvalidTransition(other)),
        }
    }

    async fn capture(&self, cx: &CallContext, order: OrderId) -> Result<Payment, PaymentError> {
        require_service(cx)?;
        if let Some(authorized) = self.recent.take(order) {
            match self.provider.capture(&authorized.provider_id).await {
                Ok(_) => {
                    return self
                        .record(
                            &authorized.payment,
                            PaymentStatus::Authorized,
                            PaymentStatus::Captured,
                            None,
                            None,
                        )
                        .await;
                }
                // Refused: the hold may have moved meanwhile; the payment
                // as recorded says what to answer.
                Err(ProviderError::Declined { .. } | ProviderError::Rejected { .. }) => {}
                Err(e) => return Err(provider_error(e)),
            }
        }
        let (payment, at_provider) = self.with_provider_side(order).await?;
        match payment.status {
            PaymentStatus::Captured => Ok(payment),
            PaymentStatus::Authorized => {
                let authorization = at_provider.authorization()?;
                match self.provider.capture(authorization).await {
                    Ok(_) => {}
                    Err(ProviderError::Declined { code } | ProviderError::Rejected { code }) => {
                        return self
                            .refused(&payment, authorization, code, PaymentStatus::Captured)
                            .await;
                    }
                    Err(e) => return Err(provider_error(e)),
                }
                self.record(
                    &payment,
                    PaymentStatus::Authorized,
                    PaymentStatus::Captured,
                    None,
                    None,
                )
                .await
            }
            other => Err(PaymentError::InvalidTransition(other)),
        }
    }

    async fn void(&self, cx: &CallContext, order: OrderId) -> Result<Payment, PaymentError> {
        require_service(cx)?;
        self.recent.take(order);
        let (mut payment, mut at_provider) = match self.with_provider_side(order).await {
            Err(PaymentError::NotFound) => {
                // No payment: none was asked for, or its authorization is
                // still on its way (a caller in another process gave up on
                // it). Barred first, then looked for again: an opening this
                // read still misses is refused its authorization by the
                // bar (`repo::record`), so no hold outlives the order.
                {
                    let mut conn = self.conn().await?;
                    repo::bar(&mut conn, order).await.map_err(database)?;
                }
                self.with_provider_side(order).await?
            }
            found => found?,
        };
        if payment.status == PaymentStatus::Authorizing {
            // The outcome of the authorization is unknown: learn it first
            // (the provider replays it by key), so no hold is left behind.
            match self.settle(&payment, &at_provider.method).await {
                Ok(_) | Err(Unsettled::Failed(PaymentError::Declined(_))) => {}
                // The hold is known and still held: asked again (the saga
                // retries), and the minute job releases it meanwhile.
                Err(Unsettled::HoldKept(e)) => return Err(e),
                Err(Unsettled::Failed(e)) if e.is_transient() => {
                    // Still no answer: the authorization is abandoned. If
                    // the provider made one, it is never captured (this
                    // payment can no longer be authorized or captured), and
                    // card networks release uncaptured holds by themselves.
                    tracing::warn!(order.id = %order, error = %e, "authorization outcome unknown; abandoned");
                    let abandoned = self
                        .record(
                            &payment,
                            PaymentStatus::Authorizing,
                            PaymentStatus::Voided,
                            None,
                            Some(ABANDONED),
                        )
                        .await?;
                    // Not moved: the authorization itself recorded its
                    // answer meanwhile (a hold, or a decline). Voided as
                    // any other, below: answering this payment as it now
                    // is would tell the saga "voided" with the hold left.
                    if abandoned.status == PaymentStatus::Voided {
                        return Ok(abandoned);
                    }
                }
                Err(Unsettled::Failed(e)) => return Err(e),
            }
            (payment, at_provider) = self.with_provider_side(order).await?;
            // Settled just now: remembered for a capture that will not come.
            self.recent.take(order);
        }
        match payment.status {
            PaymentStatus::Voided | PaymentStatus::Declined => Ok(payment),
            PaymentStatus::Authorized => {
                let authorization = at_provider.authorization()?;
                match self.provider.void(authorization).await {
                    Ok(_) => {}
                    Err(ProviderError::Declined { code } | ProviderError::Rejected { code }) => {
                        return self
                            .refused(&payment, authorization, code, PaymentStatus::Voided)
                            .await;
                    }
                    Err(e) => return Err(provider_error(e)),
                }
                self.record(
                    &payment,
                    PaymentStatus::Authorized,
                    PaymentStatus::Voided,
                    None,
                    None,
                )
                .await
            }
            other => Err(PaymentError::InvalidTransition(other)),
        }
    }

    async fn refund(&self, cx: &CallContext, order: OrderId) -> Result<Payment, PaymentError> {
        require_service(cx)?;
        self.recent.take(order);
        let (payment, at_provider) = self.with_provider_side(order).await?;
        match payment.status {
            PaymentStatus::Refunded => Ok(payment),
            PaymentStatus::Captured => {
                let authorization = at_provider.authorization()?;
                match self.provider.refund(authorization).await {
                    Ok(_) => {}
                    Err(ProviderError::Declined { code } | ProviderError::Rejected { code }) => {
                        return self
                            .refused(&payment, authorization, code, PaymentStatus::Refunded)
                            .await;
                    }
                    Err(e) => return Err(provider_error(e)),
                }
                self.record(
                    &payment,
                    PaymentStatus::Captured,
                    PaymentStatus::Refunded,
                    None,
                    None,
                )
                .await
            }
            other => Err(PaymentError::InvalidTransition(other)),
        }
    }

    async fn payment_for_order(
        &self,
        cx: &CallContext,
        order: OrderId,
    ) -> Result<Payment, PaymentError> {
        let caller = cx
            .caller()
            .ok_or(PaymentError::Common(Failure::Unauthenticated))?;
        let payment = self.by_order(order).await?;
        if caller.may_access(payment.customer_id) {
            Ok(payment)
        } else {
            Err(PaymentError::NotFound)
        }
    }

    async fn payment(&self, cx: &CallContext, id: PaymentId) -> Result<Payment, PaymentError> {
        let caller = cx
            .caller()
            .ok_or(PaymentError::Common(Failure::Unauthenticated))?;
        let (payment, _) = self.load(Key::Id(id)).await?;
        if caller.may_access(payment.customer_id) {
            Ok(payment)
        } else {
            Err(PaymentError::NotFound)
        }
    }
}
