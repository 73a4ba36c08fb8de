//! The checkout saga, orchestrated here and persisted in the order schema.
//!
//! Forward: reserve stock → authorize payment → commit stock → capture →
//! confirm. Backward (a step failed for good, or the order was cancelled):
//! refund or void the payment, restock or release the stock, then mark the
//! order failed or cancelled with the reason.
//!
//! Which step is next is decided from the order's recorded events (and two
//! flags set *before* the first reservation and payment calls), never from
//! memory, so a process killed anywhere resumes where the record says: every
//! call is idempotent by order, so repeating one whose answer was lost does
//! nothing twice. A saga is driven by one instance at a time: the holder of
//! its lease (`sagas.lease_owner` until `lease_until`), renewed at each step;
//! the recovery worker of any instance takes over sagas whose lease expired.

use std::time::Duration;

use diesel::result::Error as DieselError;
use diesel::sql_types::{Text, Uuid as SqlUuid};
use diesel_async::{AsyncConnection as _, RunQueryDsl};
use inventory_api::{InventoryError, ReservationLine, ReserveStock};
use kernel::{CallContext, OrderId, RequestId};
use payment_api::{AuthorizePayment, PaymentError, PaymentMethod};
use tokio::sync::watch;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::OrderModule;
use crate::model::{OrderEvent, OrderState};
use crate::store::{self, AppendError, SagaRow};

/// What the next move is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Reserve,
    Authorize,
    Commit,
    Capture,
    Confirm,
    Refund,
    Void,
    Restock,
    Release,
    Close,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Reserve => "reserve",
            Step::Authorize => "authorize",
            Step::Commit => "commit",
            Step::Capture => "capture",
            Step::Confirm => "confirm",
            Step::Refund => "refund",
            Step::Void => "void",
            Step::Restock => "restock",
            Step::Release => "release",
            Step::Close => "close",
        }
    }
}

/// How a step call ended.
enum Outcome {
    /// Record this event.
    Done(OrderEvent),
    /// The step failed for good: turn back (forward) with this reason.
    Failed(String),
    /// Could not tell or not now: try again later.
    Retry(String),
}

fn next_step(state: &OrderState, saga: &SagaRow) -> Option<Step> {
    if saga.done {
        return None;
    }
    if saga.direction == "forward" {
        return Some(if !state.reserved {
            Step::Reserve
        } else if !state.authorized {
            Step::Authorize
        } else if !state.committed {
            Step::Commit
        } else if !state.captured {
            Step::Capture
        } else {
            Step::Confirm
        });
    }
    Some(if state.captured && !state.refunded {
        Step::Refund
    } else if (state.authorized || saga.payment_attempted) && !state.captured && !state.voided {
        Step::Void
    } else if state.committed && !state.restocked {
        Step::Restock
    } else if (state.reserved || saga.reserve_attempted)
        && !state.committed
        && !state.released
        && !state.restocked
    {
        Step::Release
    } else {
        Step::Close
    })
}

fn inventory_retry(error: &InventoryError) -> bool {
    matches!(
        error,
        InventoryError::Unavailable(_)
            | InventoryError::Degraded(_)
            | InventoryError::Unexpected(_)
    )
}

impl OrderModule {
    fn failpoint(&self, point: &str) {
        if self.settings.crash_at.as_deref() == Some(point) {
            tracing::error!(
                failpoint = point,
                "failpoint reached: the process dies here (tests)"
            );
            std::process::abort();
        }
    }

    /// A connection for the saga's bookkeeping; a pool failure is a
    /// database error like any other here (the step is retried later).
    async fn saga_conn(&self) -> Result<db::Object, DieselError> {
        self.pool.get().await.map_err(|e| {
            DieselError::QueryBuilderError(format!("order database unavailable: {e}").into())
        })
    }

    /// Takes (or renews) the saga's lease for this instance.
    async fn lease(&self, order: OrderId) -> Result<bool, DieselError> {
        let mut conn = self.saga_conn().await?;
        let taken = diesel::sql_query(format!(
            "UPDATE sagas SET lease_owner = $2, lease_until = now() + interval '{} seconds' \
             WHERE order_id = $1 AND NOT done AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until < now())",
            self.settings.lease_secs
        ))
        .bind::<SqlUuid, _>(order.as_uuid())
        .bind::<SqlUuid, _>(self.instance)
        .execute(&mut conn)
        .await?;
        Ok(taken == 1)
    }

    async fn unlease(&self, order: OrderId, retry_in: Option<(Duration, &str)>) {
        let Ok(mut conn) = self.pool.get().await else {
            return; // the lease expires by itself
        };
        let result = match retry_in {
            Some((wait, error)) => {
                diesel::sql_query(format!(
                    "UPDATE sagas SET lease_owner = NULL, lease_until = NULL, attempts = attempts + 1, \
                     last_error = $3, next_attempt_at = now() + interval '{} milliseconds', updated_at = now() \
                     WHERE order_id = $1 AND lease_owner = $2",
                    wait.as_millis()
                ))
                .bind::<SqlUuid, _>(order.as_uuid())
                .bind::<SqlUuid, _>(self.instance)
                .bind::<Text, _>(error)
                .execute(&mut conn)
                .await
            }
            None => {
                diesel::sql_query(
                    "UPDATE sagas SET lease_owner = NULL, lease_until = NULL WHERE order_id = $1 AND lease_owner = $2",
                )
                .bind::<SqlUuid, _>(order.as_uuid())
                .bind::<SqlUuid, _>(self.instance)
                .execute(&mut conn)
                .await
            }
        };
        if let Err(e) = result {
            tracing::warn!(order.id = %order, error = %e, "could not release the saga lease");
        }
    }

    /// Drives the saga of `order` as far as it goes now. Safe to call from
    /// anywhere at any time: without the lease it does nothing.
    pub async fn drive(&self, order: OrderId) {
        match self.lease(order).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(order.id = %order, error = %e, "cannot take the saga lease");
                return;
            }
        }
        let retry = match self.run(order).await {
            Ok(None) => None,
            Ok(Some(error)) => Some(error),
            Err(e) => Some(format!("order database: {e}")),
        };
        match retry {
            None => self.unlease(order, None).await,
            Some(error) => {
                let attempts = self.attempts(order).await;
                let wait = self.backoff(attempts);
                tracing::warn!(order.id = %order, error = %error, retry_in_ms = wait.as_millis() as u64, "saga step will be retried");
                self.unlease(order, Some((wait, &error))).await;
            }
        }
    }

    async fn attempts(&self, order: OrderId) -> u32 {
        let Ok(mut conn) = self.pool.get().await else {
            return 0;
        };
        store::load_saga(&mut conn, order, false)
            .await
            .map(|s| u32::try_from(s.attempts).unwrap_or(0))
            .unwrap_or(0)
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let base = self.settings.retry_base_ms;
        let ceiling = base
            .saturating_mul(1u64 << attempts.min(16))
            .min(self.settings.retry_max_ms);
        // Full jitter, at least the base.
        Duration::from_millis(rand::Rng::gen_range(
            &mut rand::thread_rng(),
            base..=ceiling.max(base),
        ))
    }

    /// Runs steps until the saga ends or must wait; `Ok(Some(error))` to
    /// retry later.
    async fn run(&self, order: OrderId) -> Result<Option<String>, DieselError> {
        loop {
            let (state, saga) = {
                let mut conn = self.saga_conn().await?;
                let state = store::load_state(&mut conn, order, false)
                    .await?
                    .ok_or(DieselError::NotFound)?;
                let saga = store::load_saga(&mut conn, order, false).await?;
                (state, saga)
            };
            let Some(step) = next_step(&state, &saga) else {
                return Ok(None);
            };
            let cx = self.step_context(&saga);
            if !self.begin(order, step).await? {
                return Ok(None); // the lease was lost: someone else drives it
            }
            self.failpoint(&format!("before_{}", step.name()));
            let outcome = match step {
                Step::Confirm | Step::Close => {
                    return self.finish(order, step, &saga, &cx).await.map(|()| None);
                }
                _ => {
                    let span = tracing::info_span!(
                        "saga_step",
                        order.id = %order,
                        step = step.name(),
                        direction = %saga.direction
                    );
                    let started = std::time::Instant::now();
                    let outcome = self.call(step, &state, &saga, &cx).instrument(span).await;
                    metrics::histogram!("order_saga_step_duration_seconds", "step" => step.name())
                        .record(started.elapsed().as_secs_f64());
                    outcome
                }
            };
            self.failpoint(&format!("after_{}", step.name()));
            match outcome {
                Outcome::Done(event) => {
                    self.record(order, &event, &cx).await?;
                    self.failpoint(&format!("after_{}_recorded", step.name()));
                }
                Outcome::Failed(reason) if saga.direction == "forward" => {
                    self.turn_back(order, &reason).await?;
                }
                Outcome::Failed(reason) => {
                    // A compensation refused for good: an operator must look.
                    tracing::error!(order.id = %order, step = step.name(), reason = %reason, "compensation refused; the saga waits for an operator");
                    return Ok(Some(format!("{} refused: {reason}", step.name())));
                }
                Outcome::Retry(error) => {
                    let forward = saga.direction == "forward";
                    if forward && saga.attempts + 1 >= self.settings.max_step_attempts {
                        self.turn_back(order, &format!("{} did not succeed: {error}", step.name()))
                            .await?;
                    } else {
                        return Ok(Some(format!("{}: {error}", step.name())));
                    }
                }
            }
        }
    }

    fn step_context(&self, saga: &SagaRow) -> CallContext {
        let request_id = saga
            .request_id
            .as_deref()
            .and_then(RequestId::parse)
            .unwrap_or_else(RequestId::generate);
        let cx = match self.deps.services.context(request_id.clone()) {
            Ok(cx) => cx,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign a service token");
                CallContext::for_request(request_id).with_caller(kernel::Caller::service())
            }
        };
        cx.with_timeout(Duration::from_millis(self.settings.step_timeout_ms))
    }

    /// Records the step about to run (and renews the lease); false when the
    /// lease is no longer ours.
    async fn begin(&self, order: OrderId, step: Step) -> Result<bool, DieselError> {
        let mut conn = self.saga_conn().await?;
        let flags = match step {
            Step::Reserve => ", reserve_attempted = true",
            Step::Authorize => ", payment_attempted = true",
            _ => "",
        };
        let updated = diesel::sql_query(format!(
            "UPDATE sagas SET step = $3{flags}, lease_until = now() + interval '{} seconds', updated_at = now() \
             WHERE order_id = $1 AND lease_owner = $2",
            self.settings.lease_secs
        ))
        .bind::<SqlUuid, _>(order.as_uuid())
        .bind::<SqlUuid, _>(self.instance)
        .bind::<Text, _>(step.name())
        .execute(&mut conn)
        .await?;
        Ok(updated == 1)
    }

    async fn record(
        &self,
        order: OrderId,
        event: &OrderEvent,
        cx: &CallContext,
    ) -> Result<(), DieselError> {
        let mut conn = self.saga_conn().await?;
        conn.transaction::<_, DieselError, _>(async |conn| {
            match store::append(conn, order, event, cx).await {
                Ok(_) => {}
                Err(AppendError::Db(e)) => return Err(e),
                Err(AppendError::Refused(why)) => {
                    tracing::warn!(order.id = %order, kind = event.kind(), why = %why, "event not recorded");
                }
                Err(AppendError::NotFound) => return Err(DieselError::NotFound),
            }
            diesel::sql_query("UPDATE sagas SET attempts = 0, last_error = NULL WHERE order_id = $1")
                .bind::<SqlUuid, _>(order.as_uuid())
                .execute(conn)
                .await?;
            Ok(())
        })
        .await
    }

    /// The forward run failed for good: compensate, and fail the order.
    async fn turn_back(&self, order: OrderId, reason: &str) -> Result<(), DieselError> {
        tracing::info!(order.id = %order, reason = %reason, "checkout failed; compensating");
        metrics::counter!("order_sagas_compensated_total").increment(1);
        let mut conn = self.saga_conn().await?;
        diesel::sql_query(
            "UPDATE sagas SET direction = 'compensate', outcome = 'failed', reason = $2, attempts = 0, \
             updated_at = now() WHERE order_id = $1 AND direction = 'forward'",
        )
        .bind::<SqlUuid, _>(order.as_uuid())
        .bind::<Text, _>(reason)
        .execute(&mut conn)
        .await?;
        Ok(())
    }

    /// The last step: confirm (forward) or fail / cancel (backward), with
    /// the saga marked done in the same transaction.
    async fn finish(
        &self,
        order: OrderId,
        step: Step,
        seen: &SagaRow,
        cx: &CallContext,
    ) -> Result<(), DieselError> {
        let mut conn = self.saga_conn().await?;
        conn.transaction::<_, DieselError, _>(async |conn| {
            let saga = store::load_saga(conn, order, true).await?;
            if saga.direction != seen.direction || saga.done {
                return Ok(()); // turned round meanwhile: the next run sees it
            }
            let event = match step {
                Step::Confirm => OrderEvent::Confirmed,
                _ => {
                    let reason = saga.reason.clone().unwrap_or_else(|| "unknown".into());
                    if saga.outcome.as_deref() == Some("cancelled") {
                        OrderEvent::Cancelled { reason }
                    } else {
                        OrderEvent::Failed { reason }
                    }
                }
            };
            match store::append(conn, order, &event, cx).await {
                Ok(_) | Err(AppendError::Refused(_)) => {}
                Err(AppendError::Db(e)) => return Err(e),
                Err(AppendError::NotFound) => return Err(DieselError::NotFound),
            }
            diesel::sql_query(
                "UPDATE sagas SET done = true, step = NULL, last_error = NULL, updated_at = now() WHERE order_id = $1",
            )
            .bind::<SqlUuid, _>(order.as_uuid())
            .execute(conn)
            .await?;
            Ok(())
        })
        .await?;
        self.failpoint(&format!("after_{}_recorded", step.name()));
        let outcome = match step {
            Step::Confirm => "confirmed",
            _ => "compensated",
        };
        metrics::counter!("order_sagas_finished_total", "outcome" => outcome).increment(1);
        Ok(())
    }

    async fn call(
        &self,
        step: Step,
        state: &OrderState,
        saga: &SagaRow,
        cx: &CallContext,
    ) -> Outcome {
        let order = state.id;
        let inventory = &self.deps.inventory;
        let payment = &self.deps.payment;
        match step {
            Step::Reserve => {
                let lines = state
                    .lines
                    .iter()
                    .filter_map(|l| {
                        catalog_api::Sku::parse(&l.sku)
                            .ok()
                            .map(|sku| ReservationLine {
                                sku,
                                quantity: l.quantity,
                            })
                    })
                    .collect();
                match inventory
                    .reserve(
                        cx,
                        ReserveStock {
                            order_id: order,
                            lines,
                        },
                    )
                    .await
                {
                    Ok(_) => Outcome::Done(OrderEvent::StockReserved),
                    Err(InventoryError::InsufficientStock(skus)) => {
                        Outcome::Failed(format!("insufficient stock for {}", skus.join(", ")))
                    }
                    Err(e) if inventory_retry(&e) => Outcome::Retry(e.to_string()),
                    Err(e) => Outcome::Failed(format!("the stock could not be reserved: {e}")),
                }
            }
            Step::Authorize => {
                let request = AuthorizePayment {
                    order_id: order,
                    customer_id: state.customer_id,
                    amount: state.total,
                    payment_method: PaymentMethod {
                        token: saga.payment_method.clone(),
                        card_last4: saga.card_last4.clone(),
                    },
                };
                match payment.authorize(cx, request).await {
                    Ok(p) => Outcome::Done(OrderEvent::PaymentAuthorized {
                        payment_id: p.id.as_uuid(),
                    }),
                    Err(PaymentError::Declined(code)) => {
                        Outcome::Failed(format!("the card was declined ({code})"))
                    }
                    Err(e) if e.is_transient() => Outcome::Retry(e.to_string()),
                    Err(e) => Outcome::Failed(format!("the payment failed: {e}")),
                }
            }
            Step::Commit => match inventory.commit(cx, order).await {
                Ok(_) => Outcome::Done(OrderEvent::StockCommitted),
                Err(e) if inventory_retry(&e) => Outcome::Retry(e.to_string()),
                Err(e) => Outcome::Failed(format!("the stock could not be committed: {e}")),
            },
            Step::Capture => match payment.capture(cx, order).await {
                Ok(_) => Outcome::Done(OrderEvent::PaymentCaptured),
                Err(e) if e.is_transient() => Outcome::Retry(e.to_string()),
                Err(e) => Outcome::Failed(format!("the payment could not be captured: {e}")),
            },
            Step::Refund => match payment.refund(cx, order).await {
                Ok(_) => Outcome::Done(OrderEvent::PaymentRefunded),
                Err(e) if e.is_transient() => Outcome::Retry(e.to_string()),
                Err(e) => Outcome::Failed(e.to_string()),
            },
            Step::Void => match payment.void(cx, order).await {
                Ok(_) | Err(PaymentError::NotFound) => Outcome::Done(OrderEvent::PaymentVoided),
                // Captured after all (the capture's record was lost): refund.
                Err(PaymentError::InvalidTransition(status)) if status == "captured" => {
                    match payment.refund(cx, order).await {
                        Ok(_) => Outcome::Done(OrderEvent::PaymentRefunded),
                        Err(e) if e.is_transient() => Outcome::Retry(e.to_string()),
                        Err(e) => Outcome::Failed(e.to_string()),
                    }
                }
                Err(PaymentError::InvalidTransition(status)) if status == "refunded" => {
                    Outcome::Done(OrderEvent::PaymentRefunded)
                }
                Err(e) if e.is_transient() => Outcome::Retry(e.to_string()),
                Err(e) => Outcome::Failed(e.to_string()),
            },
            Step::Restock => match inventory.restock(cx, order).await {
                Ok(_) => Outcome::Done(OrderEvent::StockRestocked),
                Err(e) if inventory_retry(&e) => Outcome::Retry(e.to_string()),
                Err(e) => Outcome::Failed(e.to_string()),
            },
            Step::Release => match inventory.release(cx, order).await {
                Ok(_) | Err(InventoryError::ReservationNotFound(_)) => {
                    Outcome::Done(OrderEvent::StockReleased)
                }
                // Committed after all (the commit's record was lost): restock.
                Err(InventoryError::InvalidTransition { status, .. }) if status == "committed" => {
                    match inventory.restock(cx, order).await {
                        Ok(_) => Outcome::Done(OrderEvent::StockRestocked),
                        Err(e) if inventory_retry(&e) => Outcome::Retry(e.to_string()),
                        Err(e) => Outcome::Failed(e.to_string()),
                    }
                }
                Err(InventoryError::InvalidTransition { status, .. }) if status == "returned" => {
                    Outcome::Done(OrderEvent::StockRestocked)
                }
                Err(e) if inventory_retry(&e) => Outcome::Retry(e.to_string()),
                Err(e) => Outcome::Failed(e.to_string()),
            },
            Step::Confirm | Step::Close => Outcome::Retry("not a call".into()),
        }
    }

    /// One pass of the recovery worker: drives every saga that is due and
    /// not leased (its owner died, or it waits for a retry). Returns how
    /// many were picked.
    ///
    /// # Errors
    /// Database errors.
    pub async fn recover_due(&self) -> Result<usize, DieselError> {
        #[derive(diesel::QueryableByName)]
        struct Due {
            #[diesel(sql_type = SqlUuid)]
            order_id: Uuid,
        }
        let due: Vec<Due> = {
            let mut conn = self.saga_conn().await?;
            diesel::sql_query(
                "SELECT order_id FROM sagas WHERE NOT done AND next_attempt_at <= now() \
                 AND (lease_until IS NULL OR lease_until < now()) ORDER BY next_attempt_at LIMIT 32",
            )
            .load(&mut conn)
            .await?
        };
        let picked = due.len();
        let mut running = tokio::task::JoinSet::new();
        for row in due {
            let module = self.clone();
            running.spawn(async move { module.drive(OrderId::from(row.order_id)).await });
            while running.len() >= 8 {
                running.join_next().await;
            }
        }
        while running.join_next().await.is_some() {}
        Ok(picked)
    }
}

/// Resumes sagas whose driver died or that wait for a retry, on every
/// instance (the lease makes that safe).
pub struct RecoveryWorker {
    module: OrderModule,
}

impl RecoveryWorker {
    /// The worker of `module`.
    pub fn new(module: OrderModule) -> RecoveryWorker {
        RecoveryWorker { module }
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let every = Duration::from_millis(self.module.settings.recovery_interval_ms);
        loop {
            match self.module.recover_due().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(sagas = n, "recovery pass"),
                Err(e) => tracing::warn!(error = %e, "saga recovery pass failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}
