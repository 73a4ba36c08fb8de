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
use inventory_api::{InventoryError, ReservationLine, ReservationStatus, ReserveStock};
use kernel::{CallContext, OrderId, RequestId};
use payment_api::{AuthorizePayment, PaymentError, PaymentMethod, PaymentStatus};
use tokio::sync::watch;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::OrderModule;
use crate::model::{OrderEvent, OrderState};
use crate::store::{self, AppendError, Direction, SagaOutcome, SagaRow};

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

impl Step {
    /// What the step calls, in words for the customer.
    fn dependency(self) -> &'static str {
        match self {
            Step::Reserve | Step::Commit | Step::Restock | Step::Release => "inventory",
            Step::Authorize | Step::Capture | Step::Refund | Step::Void => "payment provider",
            Step::Confirm | Step::Close => "order service",
        }
    }

    /// The step named `name` (as [`Step::name`] writes it).
    fn parse(name: &str) -> Option<Step> {
        [
            Step::Reserve,
            Step::Authorize,
            Step::Commit,
            Step::Capture,
            Step::Confirm,
            Step::Refund,
            Step::Void,
            Step::Restock,
            Step::Release,
            Step::Close,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// The saga's column recording, before the call, that the step may have
    /// taken effect: compensation undoes what a lost answer may have done.
    fn flag(self) -> Option<&'static str> {
        match self {
            Step::Reserve => Some("reserve_attempted"),
            Step::Authorize => Some("payment_attempted"),
            _ => None,
        }
    }

    /// Sets the step's flag on a saga held in memory, as begun.
    fn mark(self, saga: &mut SagaRow) {
        match self {
            Step::Reserve => saga.reserve_attempted = true,
            Step::Authorize => saga.payment_attempted = true,
            _ => {}
        }
        saga.step = Some(self.name().to_owned());
    }
}

/// How a run of the saga ended.
enum Ran {
    /// Over for now: finished, or the lease is another instance's.
    Over,
    /// A step must be tried again later, for this reason.
    Retry(String),
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
    if saga.direction == Direction::Forward {
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
        db::connection(&self.pool, crate::NAME).await.map_err(|e| {
            DieselError::QueryBuilderError(format!("order database unavailable: {e}").into())
        })
    }

    /// Takes (or renews) the saga's lease for this instance.
    async fn lease(&self, order: OrderId) -> Result<bool, DieselError> {
        let mut conn = self.saga_conn().await?;
        let taken = db::sql(format!(
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

    /// Gives the lease up until a retry `wait` from now, counting the attempt.
    async fn unlease(&self, order: OrderId, wait: Duration, error: &str) {
        let Ok(mut conn) = db::connection(&self.pool, crate::NAME).await else {
            return; // the lease expires by itself
        };
        let result = db::sql(
            "UPDATE sagas SET lease_owner = NULL, lease_until = NULL, attempts = attempts + 1, \
             last_error = $3, next_attempt_at = now() + make_interval(secs => $4), updated_at = now() \
             WHERE order_id = $1 AND lease_owner = $2",
        )
        .bind::<SqlUuid, _>(order.as_uuid())
        .bind::<SqlUuid, _>(self.instance)
        .bind::<Text, _>(error)
        .bind::<diesel::sql_types::Double, _>(wait.as_secs_f64())
        .execute(&mut conn)
        .await;
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
        self.drive_leased(order, None).await;
    }

    /// Drives the saga of an order just placed by this instance, which holds
    /// its lease since the order's transaction and knows its state and saga
    /// (no lease or reads needed before the first step).
    pub(crate) async fn drive_placed(&self, order: OrderId, state: OrderState, saga: SagaRow) {
        self.drive_leased(order, Some((state, saga))).await;
    }

    async fn drive_leased(&self, order: OrderId, known: Option<(OrderState, SagaRow)>) {
        let retry = match self.run(order, known).await {
            Ok(Ran::Over) => None,
            Ok(Ran::Retry(error)) => Some(error),
            Err(e) => Some(format!("order database: {e}")),
        };
        match retry {
            // Finished (the last step cleared the lease with `done`) or the
            // lease was lost: nothing of ours to release.
            None => {}
            Some(error) => {
                let attempts = self.attempts(order).await;
                let wait = self.backoff(attempts);
                tracing::warn!(order.id = %order, error = %error, retry_in_ms = wait.as_millis() as u64, "saga step will be retried");
                self.unlease(order, wait, &error).await;
            }
        }
    }

    async fn attempts(&self, order: OrderId) -> u32 {
        let Ok(mut conn) = db::connection(&self.pool, crate::NAME).await else {
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

    /// Runs steps until the saga ends or must wait. The state and saga are
    /// read once (or known). A step's result is recorded together with the
    /// next step's intent when that step needs one (its flag: compensation
    /// undoes what a lost answer may have done) and on the way back;
    /// otherwise it is held and recorded with the next record, at the
    /// latest with the last step. A crash loses only held results, whose
    /// steps the next run repeats: every call is idempotent by order. The
    /// lease is renewed by each record, at least every third of its term.
    async fn run(
        &self,
        order: OrderId,
        known: Option<(OrderState, SagaRow)>,
    ) -> Result<Ran, DieselError> {
        let (mut state, mut saga) = match known {
            Some(known) => known,
            None => self.read(order).await?,
        };
        // The step whose intent is recorded (`sagas.step`, flags, lease).
        let mut begun = saga.step.as_deref().and_then(Step::parse);
        // Results done but not recorded yet, oldest first.
        let mut held: Vec<OrderEvent> = Vec::new();
        let mut renewed = std::time::Instant::now();
        let renew_every = Duration::from_secs(self.settings.lease_secs) / 3;
        loop {
            let Some(step) = next_step(&state, &saga) else {
                return Ok(Ran::Over);
            };
            let cx = self.step_context(&saga);
            if begun != Some(step) {
                if !self.begin(order, step).await? {
                    return Ok(Ran::Over); // the lease was lost: someone else drives it
                }
                step.mark(&mut saga);
                begun = Some(step);
                renewed = std::time::Instant::now();
            }
            self.failpoint(&format!("before_{}", step.name()));
            let outcome = match step {
                Step::Confirm | Step::Close => {
                    if self.finish(order, step, &saga, &held, &cx).await? {
                        return Ok(Ran::Over);
                    }
                    // Turned round meanwhile (a cancel): read it again.
                    held.clear();
                    (state, saga) = self.read(order).await?;
                    begun = saga.step.as_deref().and_then(Step::parse);
                    continue;
                }
                _ => {
                    let span = tracing::info_span!(
                        "saga_step",
                        otel.name = %format_args!("saga {}", step.name()),
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
                    let mut after = state.clone();
                    after.apply(&event, store::now());
                    let next = next_step(&after, &saga);
                    held.push(event);
                    let record_now = saga.direction != Direction::Forward
                        || next.and_then(Step::flag).is_some()
                        || renewed.elapsed() >= renew_every;
                    if record_now {
                        let Some(recorded) = self.record(order, &saga, &held, &cx).await? else {
                            return Ok(Ran::Over); // the lease was lost after the step
                        };
                        held.clear();
                        (state, begun) = recorded;
                        if let Some(next) = begun {
                            next.mark(&mut saga);
                        }
                        renewed = std::time::Instant::now();
                    } else {
                        // Held: the next step needs no intent on record.
                        state = after;
                        begun = next;
                    }
                    saga.attempts = 0;
                    self.failpoint(&format!("after_{}_recorded", step.name()));
                }
                Outcome::Failed(reason) if saga.direction == Direction::Forward => {
                    self.flush(order, &saga, &mut held, &cx).await?;
                    self.turn_back(order, &reason).await?;
                    saga.direction = Direction::Compensate;
                    saga.outcome = Some(SagaOutcome::Failed);
                    saga.reason = Some(reason);
                    saga.attempts = 0;
                }
                Outcome::Failed(reason) => {
                    // A compensation refused for good: an operator must look.
                    tracing::error!(order.id = %order, step = step.name(), reason = %reason, "compensation refused; the saga waits for an operator");
                    return Ok(Ran::Retry(format!("{} refused: {reason}", step.name())));
                }
                Outcome::Retry(error) => {
                    self.flush(order, &saga, &mut held, &cx).await?;
                    let forward = saga.direction == Direction::Forward;
                    if forward && saga.attempts + 1 >= self.settings.max_step_attempts {
                        // The customer sees (and is emailed) the reason: it
                        // names the step, never an address or a database's
                        // words; those go to the log.
                        tracing::warn!(order.id = %order, step = step.name(), error = %error, "checkout step gave up after its attempts");
                        let reason = format!(
                            "the {} step could not be completed: the {} did not answer in time",
                            step.name(),
                            step.dependency()
                        );
                        self.turn_back(order, &reason).await?;
                        saga.direction = Direction::Compensate;
                        saga.outcome = Some(SagaOutcome::Failed);
                        saga.reason = Some(reason);
                        saga.attempts = 0;
                    } else {
                        return Ok(Ran::Retry(format!("{}: {error}", step.name())));
                    }
                }
            }
        }
    }

    /// The order's state and saga as recorded.
    async fn read(&self, order: OrderId) -> Result<(OrderState, SagaRow), DieselError> {
        let mut conn = self.saga_conn().await?;
        let state = store::load_state(&mut conn, order, false)
            .await?
            .ok_or(DieselError::NotFound)?;
        let saga = store::load_saga(&mut conn, order, false).await?;
        Ok((state, saga))
    }

    /// Records the held results, if any (before turning back or waiting).
    async fn flush(
        &self,
        order: OrderId,
        saga: &SagaRow,
        held: &mut Vec<OrderEvent>,
        cx: &CallContext,
    ) -> Result<(), DieselError> {
        if !held.is_empty() {
            self.record(order, saga, held, cx).await?;
            held.clear();
        }
        Ok(())
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
        let updated = db::sql(format!(
            "UPDATE sagas SET step = $3{}, lease_until = now() + interval '{} seconds', updated_at = now() \
             WHERE order_id = $1 AND lease_owner = $2",
            step.flag()
                .map_or(String::new(), |column| format!(", {column} = true")),
            self.settings.lease_secs
        ))
        .bind::<SqlUuid, _>(order.as_uuid())
        .bind::<SqlUuid, _>(self.instance)
        .bind::<Text, _>(step.name())
        .execute(&mut conn)
        .await?;
        Ok(updated == 1)
    }

    /// Records steps' results and, in the same transaction, the intent of
    /// the step that follows (as [`Self::begin`] would, lease renewed).
    /// Returns the new state and the step begun, or `None` when the lease is
    /// no longer ours (the results are recorded all the same: they happened).
    async fn record(
        &self,
        order: OrderId,
        saga: &SagaRow,
        events: &[OrderEvent],
        cx: &CallContext,
    ) -> Result<Option<(OrderState, Option<Step>)>, DieselError> {
        #[derive(diesel::QueryableByName)]
        struct Ours {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            ours: bool,
        }
        let mut conn = self.saga_conn().await?;
        conn.transaction::<_, DieselError, _>(async |conn| {
            let state = match store::append_all(conn, order, events, cx).await {
                Ok(state) => state,
                Err(AppendError::Db(e)) => return Err(e),
                Err(AppendError::Refused(_) | AppendError::NotFound) => {
                    return Err(DieselError::NotFound);
                }
            };
            let next = next_step(&state, saga);
            let (name, flag) = next.map_or((None, None), |s| (Some(s.name()), s.flag()));
            let row: Ours = db::sql(format!(
                "UPDATE sagas SET attempts = 0, last_error = NULL, updated_at = now(), \
                 step = CASE WHEN lease_owner = $2 THEN $3 ELSE step END{}, \
                 lease_until = CASE WHEN lease_owner = $2 THEN now() + interval '{} seconds' ELSE lease_until END \
                 WHERE order_id = $1 RETURNING lease_owner IS NOT DISTINCT FROM $2 AS ours",
                flag.map_or(String::new(), |column| format!(
                    ", {column} = {column} OR lease_owner IS NOT DISTINCT FROM $2"
                )),
                self.settings.lease_secs
            ))
            .bind::<SqlUuid, _>(order.as_uuid())
            .bind::<SqlUuid, _>(self.instance)
            .bind::<diesel::sql_types::Nullable<Text>, _>(name)
            .get_result(conn)
            .await?;
            Ok(row.ours.then_some((state, next)))
        })
        .await
        .inspect(|_| events::outbox::wake(crate::NAME))
    }

    /// The forward run failed for good: compensate, and fail the order.
    async fn turn_back(&self, order: OrderId, reason: &str) -> Result<(), DieselError> {
        tracing::info!(order.id = %order, reason = %reason, "checkout failed; compensating");
        metrics::counter!("order_sagas_compensated_total").increment(1);
        let mut conn = self.saga_conn().await?;
        db::sql(
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
    /// the saga marked done (and its lease cleared) in the same transaction.
    /// False when the saga turned round meanwhile.
    async fn finish(
        &self,
        order: OrderId,
        step: Step,
        seen: &SagaRow,
        held: &[OrderEvent],
        cx: &CallContext,
    ) -> Result<bool, DieselError> {
        let mut conn = self.saga_conn().await?;
        let finished = conn
            .transaction::<_, DieselError, _>(async |conn| {
                let saga = store::load_saga(conn, order, true).await?;
                if saga.done {
                    return Ok(Some(false)); // finished by another driver
                }
                // The results held back are recorded in any case: they
                // happened; the last step's event only if still going this way.
                let turned = saga.direction != seen.direction;
                let mut events = held.to_vec();
                if !turned {
                    let event = match step {
                        Step::Confirm => OrderEvent::Confirmed,
                        _ => {
                            let reason = saga.reason.clone().unwrap_or_else(|| "unknown".into());
                            if saga.outcome == Some(SagaOutcome::Cancelled) {
                                OrderEvent::Cancelled { reason }
                            } else {
                                OrderEvent::Failed { reason }
                            }
                        }
                    };
                    events.push(event);
                }
                if !events.is_empty() {
                    match store::append_all(conn, order, &events, cx).await {
                        Ok(_) => {}
                        Err(AppendError::Db(e)) => return Err(e),
                        Err(AppendError::Refused(_) | AppendError::NotFound) => {
                            return Err(DieselError::NotFound);
                        }
                    }
                }
                if turned {
                    return Ok(None); // turned round meanwhile
                }
                db::sql(
                "UPDATE sagas SET done = true, step = NULL, last_error = NULL, lease_owner = NULL, \
                 lease_until = NULL, updated_at = now() WHERE order_id = $1",
            )
            .bind::<SqlUuid, _>(order.as_uuid())
            .execute(conn)
            .await?;
                Ok(Some(true))
            })
            .await?;
        events::outbox::wake(crate::NAME);
        match finished {
            None => return Ok(false),
            Some(false) => return Ok(true),
            Some(true) => {}
        }
        self.failpoint(&format!("after_{}_recorded", step.name()));
        let outcome = match step {
            Step::Confirm => "confirmed",
            _ => "compensated",
        };
        metrics::counter!("order_sagas_finished_total", "outcome" => outcome).increment(1);
        Ok(true)
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
                    .map(|l| ReservationLine {
                        sku: l.sku.clone(),
                        quantity: l.quantity,
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
                Err(PaymentError::InvalidTransition(PaymentStatus::Captured)) => {
                    match payment.refund(cx, order).await {
                        Ok(_) => Outcome::Done(OrderEvent::PaymentRefunded),
                        Err(e) if e.is_transient() => Outcome::Retry(e.to_string()),
                        Err(e) => Outcome::Failed(e.to_string()),
                    }
                }
                Err(PaymentError::InvalidTransition(PaymentStatus::Refunded)) => {
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
                Err(InventoryError::InvalidTransition {
                    status: ReservationStatus::Committed,
                    ..
                }) => match inventory.restock(cx, order).await {
                    Ok(_) => Outcome::Done(OrderEvent::StockRestocked),
                    Err(e) if inventory_retry(&e) => Outcome::Retry(e.to_string()),
                    Err(e) => Outcome::Failed(e.to_string()),
                },
                Err(InventoryError::InvalidTransition {
                    status: ReservationStatus::Returned,
                    ..
                }) => Outcome::Done(OrderEvent::StockRestocked),
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
            db::sql(
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
        let prune_every = Duration::from_secs(self.module.settings.prune_interval_secs.max(1));
        let mut pruned: Option<std::time::Instant> = None;
        loop {
            if pruned.is_none_or(|at| at.elapsed() >= prune_every) {
                pruned = Some(std::time::Instant::now());
                match self.module.prune_idempotency_keys().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(keys = n, "expired idempotency keys pruned"),
                    Err(e) => tracing::warn!(error = %e, "pruning idempotency keys failed"),
                }
            }
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
