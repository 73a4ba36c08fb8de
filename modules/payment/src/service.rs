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
use kernel::{CallContext, Failure, OrderId};
use payment_api::{
    AuthorizePayment, LedgerEntry, Payment, PaymentApi, PaymentError, PaymentId, PaymentMethod,
    PaymentStatus, Tokenize,
};

use crate::domain::{self, AtProvider};
use crate::provider::{PaymentProvider, ProviderError};
use crate::repo::{self, Key, Step, Stored};

/// Payments, served from this process's database pool.
#[derive(Clone)]
pub struct PaymentModule {
    pool: Pool,
    provider: Arc<dyn PaymentProvider>,
    recent: Arc<Recent>,
}

/// The authorizations this process obtained lately, by order, with the
/// provider's id of each: the capture that follows within milliseconds
/// (the checkout's next steps) starts from here instead of reading the
/// payment again, and records the authorization with itself (one
/// statement, two ledger lines) instead of in a statement of its own
/// (ADR 0015). Reading it would guard nothing more: the capture's record
/// is conditional (`WHERE status = ...`) either way, a payment moved
/// meanwhile on another path is found moved by it, and a provider that
/// refuses the capture (a hold voided meanwhile) sends the capture back to
/// the read. Entries live a minute, a few thousand at most; another
/// instance, or a restart, reads the row, and a row still `authorizing`
/// asks the provider, which replays the authorization by its key.
#[derive(Default)]
struct Recent(std::sync::Mutex<std::collections::HashMap<OrderId, Authorized>>);

/// An authorization the provider gave ([`Recent`]).
struct Authorized {
    /// The payment as recorded: `authorizing` (the authorization held, to
    /// be recorded with the capture or before a void), or `authorized`.
    payment: Payment,
    provider_id: String,
    /// When the provider answered: the time of its ledger line.
    at: chrono::DateTime<chrono::Utc>,
    seen: std::time::Instant,
}

impl Authorized {
    fn held(&self) -> bool {
        self.payment.status == PaymentStatus::Authorizing
    }

    /// The payment as the caller may know it: authorized.
    fn answer(&self) -> Payment {
        let mut payment = self.payment.clone();
        if self.held() {
            payment.status = PaymentStatus::Authorized;
            payment.ledger.push(LedgerEntry {
                kind: PaymentStatus::Authorized.as_str().to_owned(),
                amount: payment.amount,
                reason: None,
                at: self.at,
            });
        }
        payment
    }
}

impl Recent {
    const MAX: usize = 4096;
    const TTL: std::time::Duration = std::time::Duration::from_secs(60);

    fn remember(&self, authorized: Authorized) {
        let Ok(mut recent) = self.0.lock() else {
            return;
        };
        if recent.len() >= Self::MAX {
            recent.retain(|_, a| a.seen.elapsed() < Self::TTL);
            if recent.len() >= Self::MAX {
                recent.clear();
            }
        }
        recent.insert(authorized.payment.order_id, authorized);
    }

    /// The answer of `order`'s authorization, held here, kept.
    fn answer(&self, order: OrderId) -> Option<Payment> {
        let recent = self.0.lock().ok()?;
        recent
            .get(&order)
            .filter(|a| a.seen.elapsed() < Self::TTL)
            .map(Authorized::answer)
    }

    /// The authorization of `order`, forgotten here as it is handed out.
    fn take(&self, order: OrderId) -> Option<Authorized> {
        let mut recent = self.0.lock().ok()?;
        recent
            .remove(&order)
            .filter(|a| a.seen.elapsed() < Self::TTL)
    }
}

/// A failed statement, as this module answers it (`db::query_failure`:
/// 503 when the database cannot answer now, 500 otherwise).
fn database(error: DieselError) -> PaymentError {
    db::query_failure(crate::NAME, error)
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

fn require_service(cx: &CallContext) -> Result<(), PaymentError> {
    match cx.caller() {
        None => Err(PaymentError::Common(Failure::Unauthenticated)),
        Some(c) if !c.is_admin_or_service() => Err(PaymentError::Common(Failure::Forbidden)),
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

    /// Moves `payment` as `step` says and writes its ledger line(s), once:
    /// a second caller finds it moved already (and gets it as it is now).
    async fn record(&self, payment: &Payment, step: Step<'_>) -> Result<Payment, PaymentError> {
        let order = payment.order_id;
        let moved = {
            let mut conn = self.conn().await?;
            repo::record(&mut conn, order, &step)
                .await
                .map_err(database)?
        };
        if moved.is_some() {
            if step.authorized_at.is_some() {
                metrics::counter!("payment_steps_total", "step" => PaymentStatus::Authorized.as_str())
                    .increment(1);
            }
            metrics::counter!("payment_steps_total", "step" => step.to.as_str()).increment(1);
        }
        match moved.flatten() {
            // Moved here: the payment as it was, with its new lines.
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

    /// Records `authorized`, held since the provider answered, on its own
    /// (a void, or a capture refused, needs the row to say it).
    async fn record_authorization(&self, authorized: &Authorized) -> Result<Payment, PaymentError> {
        if !authorized.held() {
            return Ok(authorized.payment.clone());
        }
        self.record(
            &authorized.payment,
            Step {
                provider_ref: Some(&authorized.provider_id),
                ..Step::moving(PaymentStatus::Authorizing, PaymentStatus::Authorized)
            },
        )
        .await
    }

    /// Captures `authorized` at the provider and records it, with the
    /// authorization when that was held: one statement. `Ok(None)` when the
    /// provider refused (the hold moved meanwhile: the caller reads).
    async fn capture_known(&self, authorized: Authorized) -> Result<Option<Payment>, PaymentError> {
        match self.provider.capture(&authorized.provider_id).await {
            Ok(_) => {}
            Err(ProviderError::Declined { .. } | ProviderError::Rejected { .. }) => {
                // The row must say what the provider gave before the read
                // decides (a void meanwhile, or a capture after all).
                self.record_authorization(&authorized).await?;
                return Ok(None);
            }
            Err(e) => {
                // Not known to have happened: kept for the retry.
                self.recent.remember(authorized);
                return Err(provider_error(e));
            }
        }
        let step = if authorized.held() {
            Step {
                provider_ref: Some(&authorized.provider_id),
                authorized_at: Some(authorized.at),
                ..Step::moving(PaymentStatus::Authorizing, PaymentStatus::Captured)
            }
        } else {
            Step::moving(PaymentStatus::Authorized, PaymentStatus::Captured)
        };
        let payment = self.record(&authorized.payment, step).await?;
        match payment.status {
            PaymentStatus::Captured => Ok(Some(payment)),
            // Moved on another path meanwhile (a void that found the hold
            // captured records the capture itself).
            other => Err(PaymentError::InvalidTransition(other)),
        }
    }

    /// Why the provider refused to void the authorization of `payment`,
    /// recorded here `Authorized`. A hold can leave that state without this
    /// row knowing in one way: a capture whose answer was lost (a timeout,
    /// a crash before its record) and that was not repeated before the
    /// order turned back. The provider is asked; if it captured, the
    /// capture is recorded and the answer is `InvalidTransition(Captured)`,
    /// which the saga refunds, instead of a refusal it would meet for ever.
    async fn refused_void(
        &self,
        payment: &Payment,
        authorization: &str,
        code: String,
    ) -> PaymentError {
        let found = match self.provider.authorization(authorization).await {
            Ok(found) => found,
            Err(e) => return provider_error(e),
        };
        if !matches!(found.status.as_str(), "captured" | "refunded") {
            return PaymentError::Declined(code);
        }
        tracing::warn!(order.id = %payment.order_id, "void refused: the provider had captured; recorded");
        match self
            .record(
                payment,
                Step::moving(PaymentStatus::Authorized, PaymentStatus::Captured),
            )
            .await
        {
            Ok(now) => PaymentError::InvalidTransition(now.status),
            Err(e) => e,
        }
    }

    /// Asks the provider for the authorization of a payment still
    /// `authorizing` (first time, or again after a crash or a timeout: the
    /// key is the same, so the provider answers the same authorization). A
    /// decline is recorded; an authorization is held, not recorded: the
    /// capture records it (ADR 0015), and whoever needs the row to say it
    /// first records it ([`Self::record_authorization`]).
    async fn settle(&self, payment: &Payment, method: &str) -> Result<Authorized, PaymentError> {
        let key = domain::authorization_key(payment.order_id);
        match self.provider.authorize(&key, payment.amount, method).await {
            Ok(authorization) => Ok(Authorized {
                payment: payment.clone(),
                provider_id: authorization.id,
                at: chrono::Utc::now(),
                seen: std::time::Instant::now(),
            }),
            Err(ProviderError::Declined { code } | ProviderError::Rejected { code }) => {
                self.record(
                    payment,
                    Step {
                        reason: Some(&code),
                        ..Step::moving(PaymentStatus::Authorizing, PaymentStatus::Declined)
                    },
                )
                .await?;
                Err(PaymentError::Declined(code))
            }
            Err(e) => Err(provider_error(e)),
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
            None => self.with_provider_side(order).await?,
        };
        if payment.amount != request.amount || payment.customer_id != request.customer_id {
            return Err(PaymentError::Conflict);
        }
        match payment.status {
            PaymentStatus::Authorizing => {
                if let Some(held) = self.recent.answer(order) {
                    // Asked again (a retry whose first answer was lost).
                    return Ok(held);
                }
                // Held for the capture; a void that gave the attempt up
                // meanwhile is found by the capture's conditional record.
                // The method the payment was opened with: the provider's
                // key answers that request only.
                let authorized = self.settle(&payment, &at_provider.method).await?;
                let answer = authorized.answer();
                self.recent.remember(authorized);
                Ok(answer)
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
        if let Some(authorized) = self.recent.take(order)
            && let Some(captured) = self.capture_known(authorized).await?
        {
            return Ok(captured);
        }
        let (payment, at_provider) = self.with_provider_side(order).await?;
        let authorized = match payment.status {
            PaymentStatus::Captured => return Ok(payment),
            // Authorized by an instance that held it for its capture (and
            // then could not capture: a crash, another instance asked), or
            // not yet: the provider replays the authorization by its key.
            PaymentStatus::Authorizing => self.settle(&payment, &at_provider.method).await?,
            PaymentStatus::Authorized => Authorized {
                provider_id: at_provider.authorization()?.to_owned(),
                payment,
                at: chrono::Utc::now(),
                seen: std::time::Instant::now(),
            },
            other => return Err(PaymentError::InvalidTransition(other)),
        };
        match self.capture_known(authorized).await? {
            Some(captured) => Ok(captured),
            // Refused by the provider: the hold moved on another path.
            None => {
                let now = self.by_order(order).await?;
                match now.status {
                    PaymentStatus::Captured => Ok(now),
                    other => Err(PaymentError::InvalidTransition(other)),
                }
            }
        }
    }

    async fn void(&self, cx: &CallContext, order: OrderId) -> Result<Payment, PaymentError> {
        require_service(cx)?;
        let held = self.recent.take(order);
        let (mut payment, mut at_provider) = self.with_provider_side(order).await?;
        if payment.status == PaymentStatus::Authorizing {
            // The outcome of the authorization is not recorded: learn it
            // first (held here, or the provider replays it by key), so no
            // hold is left behind.
            let known = match held {
                Some(authorized) => Ok(authorized),
                None => self.settle(&payment, &at_provider.method).await,
            };
            match known {
                Ok(authorized) => {
                    self.record_authorization(&authorized).await?;
                }
                Err(PaymentError::Declined(_)) => {}
                Err(e) if e.is_transient() => {
                    // Still no answer: the authorization is abandoned. If
                    // the provider made one, it is never captured (this
                    // payment can no longer be authorized or captured), and
                    // card networks release uncaptured holds by themselves.
                    tracing::warn!(order.id = %order, error = %e, "authorization outcome unknown; abandoned");
                    return self
                        .record(
                            &payment,
                            Step {
                                reason: Some("authorization_outcome_unknown"),
                                ..Step::moving(PaymentStatus::Authorizing, PaymentStatus::Voided)
                            },
                        )
                        .await;
                }
                Err(e) => return Err(e),
            }
            (payment, at_provider) = self.with_provider_side(order).await?;
        }
        match payment.status {
            PaymentStatus::Voided | PaymentStatus::Declined => Ok(payment),
            PaymentStatus::Authorized => {
                let authorization = at_provider.authorization()?;
                match self.provider.void(authorization).await {
                    Ok(_) => {}
                    Err(ProviderError::Rejected { code }) => {
                        return Err(self.refused_void(&payment, authorization, code).await);
                    }
                    Err(e) => return Err(provider_error(e)),
                }
                self.record(
                    &payment,
                    Step::moving(PaymentStatus::Authorized, PaymentStatus::Voided),
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
                self.provider
                    .refund(at_provider.authorization()?)
                    .await
                    .map_err(provider_error)?;
                self.record(
                    &payment,
                    Step::moving(PaymentStatus::Captured, PaymentStatus::Refunded),
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
