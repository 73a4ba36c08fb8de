//! The checkout saga, orchestrated here and persisted in the order schema.
//!
//! Forward: reserve stock → authorize payment → commit stock → capture →
//! confirm. Backward (a step failed for good, or the order was cancelled):
//! refund or void the payment, restock or release the stock, then mark the
//! order failed or cancelled with the reason.
//!
//! Which step is next is decided from the order's recorded events (and two
//! flags set with the order, before any reservation or payment call: a
//! reservation or a payment may exist; compensation asks each module to
//! undo its own, and each answers "none" if it was never asked), never from
//! memory, so a process killed anywhere resumes where the record says: every
//! call is idempotent by order, so repeating one whose answer was lost does
//! nothing twice. A saga is driven by one run at a time: the holder of its
//! lease (`sagas.lease_owner` until `lease_until`), renewed at each step;
//! the recovery worker of any instance takes over sagas whose lease expired.
//! The owner is the run, not the process: a second run in the same process
//! (a cancel arriving while the placing request still drives the saga) is
//! refused the lease like a run of another instance, and the run holding it
//! finds the turn before its next step when the cancel was made in its
//! process; a cancel made elsewhere, before the capture when the checkout
//! outlasted its request's wait (one read: the customer holds the order's
//! id by then) or the run resumes a saga, otherwise at its finish.

mod calls;
mod record;
mod step;

use std::time::Duration;

use auth::ServiceTokens;
use db::Pool;
use diesel::result::Error as DieselError;
use inventory_api::InventoryApi;
use kernel::{CallContext, OrderId, RequestId};
use payment_api::PaymentApi;
use std::sync::Arc;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::Settings;
use crate::domain::{OrderEvent, OrderState};
use crate::repo::{self, Direction, SagaOutcome, SagaRow, sagas};
use record::Finish;
pub(crate) use record::Reply;
use step::{Outcome, Ran, Step, next_step};

/// The checkout saga of this instance: drives orders' sagas through the
/// inventory and payment modules, recording every step in the order schema.
#[derive(Clone)]
pub struct Saga {
    pool: Pool,
    inventory: Arc<dyn InventoryApi>,
    payment: Arc<dyn PaymentApi>,
    services: Arc<ServiceTokens>,
    settings: Arc<Settings>,
    /// The lease owner of this run ([`Self::new_run`]); the module's own value
    /// never leases (every drive begins a run).
    owner: Uuid,
    /// The runs of this process that hold a saga's lease now, by order
    /// (shared by every run): what a stopping process gives up
    /// ([`Self::give_up_leases`]).
    driving: Arc<std::sync::Mutex<std::collections::HashMap<OrderId, Driving>>>,
}

/// A run of this process holding a saga's lease ([`Saga::driving`]).
struct Driving {
    owner: Uuid,
    /// Cancelled by this process meanwhile ([`Saga::turned_here`]): the run
    /// turns before its next step instead of at its finish, so a cancel
    /// during the checkout sells and charges nothing it would then give
    /// back. A cancel made by another instance is met before the capture
    /// (one read of the saga's direction: the hold is voided, never charged
    /// and refunded), or at the finish if it comes later.
    turned: bool,
}

impl Saga {
    /// The saga over the order schema's `pool`, calling `inventory` and
    /// `payment` as the service `services` signs for.
    pub(crate) fn new(
        pool: Pool,
        inventory: Arc<dyn InventoryApi>,
        payment: Arc<dyn PaymentApi>,
        services: Arc<ServiceTokens>,
        settings: Arc<Settings>,
    ) -> Saga {
        Saga {
            pool,
            inventory,
            payment,
            services,
            settings,
            owner: Uuid::now_v7(),
            driving: Arc::default(),
        }
    }

    /// A run of the saga: the same saga under a lease owner of its own, so
    /// that two runs never drive one saga at once, in one process or two.
    pub(crate) fn new_run(&self) -> Saga {
        Saga {
            owner: Uuid::now_v7(),
            ..self.clone()
        }
    }

    /// The lease owner of this run.
    pub(crate) fn owner(&self) -> Uuid {
        self.owner
    }

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

    /// Drives the saga of `order` as far as it goes now, as a run of its
    /// own. Safe to call from anywhere at any time: while another run holds
    /// the lease (here or elsewhere) it does nothing.
    pub async fn drive(&self, order: OrderId) {
        let run = self.new_run();
        match run.lease(order).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(order.id = %order, error = %e, "cannot take the saga lease");
                return;
            }
        }
        run.drive_leased(order, None, None).await;
    }

    /// Drives the saga of an order just placed by this run ([`Self::new_run`],
    /// whose owner the placing transaction wrote as the lease's), which
    /// holds its lease since the order's transaction and knows its state and saga
    /// (no lease or reads needed before the first step). If this run
    /// finishes the saga, its last step also keeps the placing request's
    /// response under `reply`'s key (unless one is kept already), and the
    /// order as that step committed it is returned.
    pub(crate) async fn drive_placed(
        &self,
        order: OrderId,
        state: OrderState,
        saga: SagaRow,
        reply: Reply,
    ) -> Option<OrderState> {
        self.drive_leased(order, Some((state, saga)), Some(&reply))
            .await
    }

    /// Runs the saga; the order as its last step committed it when this run
    /// finished it.
    async fn drive_leased(
        &self,
        order: OrderId,
        known: Option<(OrderState, SagaRow)>,
        reply: Option<&Reply>,
    ) -> Option<OrderState> {
        self.driving_now(order, true);
        let ran = self.run(order, known, reply).await;
        // Not reached when the run is dropped (its worker's runtime
        // stopping with the process): the entry stays for the stop.
        self.driving_now(order, false);
        let retry = match ran {
            Ok(Ran::Finished(state)) => return Some(*state),
            Ok(Ran::Over) => None,
            Ok(Ran::Retry(error)) => Some((error, true)),
            Ok(Ran::Refused(error)) => Some((error, false)),
            Err(e) => Some((format!("order database: {e}"), true)),
        };
        match retry {
            // Finished (the last step cleared the lease with `done`) or the
            // lease was lost: nothing of ours to release.
            None => {}
            Some((error, counted)) => {
                // A refused identity is not counted (it must never give the
                // step up): asked again at the longest backoff, not in a
                // loop at the shortest.
                let wait = if counted {
                    self.backoff(self.attempts(order).await)
                } else {
                    Duration::from_millis(self.settings.retry_max_ms.max(1))
                };
                tracing::warn!(order.id = %order, error = %error, retry_in_ms = wait.as_millis() as u64, "saga step will be retried");
                self.unlease(order, wait, &error, counted).await;
            }
        }
        None
    }

    /// Tells the run of this process that drives `order`, if any, that the
    /// order was turned round (cancelled) on record.
    pub(crate) fn turned_here(&self, order: OrderId) {
        if let Ok(mut driving) = self.driving.lock()
            && let Some(run) = driving.get_mut(&order)
        {
            run.turned = true;
        }
    }

    /// Whether `order`'s saga was turned back by a cancel made anywhere
    /// ([`sagas::turned_back`]: one read, before the capture only). A read
    /// that fails says no: the finish meets the cancel all the same, and
    /// the results held are not thrown away for it.
    async fn turned_back(&self, order: OrderId) -> bool {
        let read = match self.saga_conn().await {
            Ok(mut conn) => sagas::turned_back(&mut conn, order).await,
            Err(e) => Err(e),
        };
        read.unwrap_or_else(|e| {
            tracing::warn!(order.id = %order, error = %e, "cannot read whether the saga was turned; met at its finish");
            false
        })
    }

    /// Whether `order` was turned round here since this run last asked.
    fn take_turn(&self, order: OrderId) -> bool {
        let Ok(mut driving) = self.driving.lock() else {
            return false;
        };
        match driving.get_mut(&order) {
            Some(run) if run.owner == self.owner => std::mem::take(&mut run.turned),
            _ => false,
        }
    }

    /// Notes that this run holds `order`'s lease (`true`) or no longer does.
    fn driving_now(&self, order: OrderId, holds: bool) {
        let Ok(mut driving) = self.driving.lock() else {
            return;
        };
        if holds {
            let run = Driving {
                owner: self.owner,
                turned: false,
            };
            driving.insert(order, run);
        } else if driving
            .get(&order)
            .is_some_and(|run| run.owner == self.owner)
        {
            driving.remove(&order);
        }
    }

    /// Gives up the leases this process's runs still hold: called as the
    /// process stops, after its server (and the runs its workers drove
    /// after answering 202) went. Another instance then resumes those
    /// sagas at once, not after the lease's term; what a run held
    /// unrecorded is repeated, as after a crash (every call is idempotent
    /// by order). A run still going somewhere loses its lease like one
    /// that outlived it: its records are refused.
    pub async fn give_up_leases(&self) {
        let held: Vec<(OrderId, Uuid)> = match self.driving.lock() {
            Ok(mut driving) => driving
                .drain()
                .map(|(order, run)| (order, run.owner))
                .collect(),
            Err(_) => return,
        };
        if held.is_empty() {
            return;
        }
        let Ok(mut conn) = db::connection(&self.pool, crate::NAME).await else {
            return; // the leases expire by themselves
        };
        for (order, owner) in held {
            // No attempt counted: nothing failed (a rolling deploy must not
            // bring a slow step nearer its last attempt).
            match sagas::release(&mut conn, order, owner).await {
                Ok(()) => {
                    tracing::warn!(order.id = %order, "saga lease given up as the process stops")
                }
                Err(e) => {
                    tracing::warn!(order.id = %order, error = %e, "could not give the saga lease up")
                }
            }
        }
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
    /// read once (or known). On the way forward a step's result is held
    /// and recorded with the next record, at the latest with the last step
    /// (no step needs its intent written before its call: the flags that
    /// tell compensation what may exist are set with the order). On the way
    /// back every result is recorded, and a step begun after a turn is
    /// recorded by [`Self::begin`], one statement. A crash loses only held
    /// results, whose steps the next run repeats: every call is idempotent
    /// by order. The lease is renewed by each record and each begin, at
    /// least every third of its term.
    async fn run(
        &self,
        order: OrderId,
        known: Option<(OrderState, SagaRow)>,
        reply: Option<&Reply>,
    ) -> Result<Ran, DieselError> {
        let (mut state, mut saga) = match known {
            Some(known) => known,
            None => self.read(order).await?,
        };
        // The order as recorded, while this run knows it: records append
        // from it without reading the order again. Never ahead of the
        // record (`state` is, by the results held).
        let mut recorded = Some(state.clone());
        // The step whose intent is recorded (`sagas.step`, flags, lease).
        let mut begun = saga.step.as_deref().and_then(Step::parse);
        // Results done but not recorded yet, oldest first.
        let mut held: Vec<OrderEvent> = Vec::new();
        let mut renewed = std::time::Instant::now();
        let renew_every = Duration::from_secs(self.settings.lease_secs) / 3;
        let began = std::time::Instant::now();
        let checkout_wait = Duration::from_millis(self.settings.checkout_wait_ms);
        loop {
            let Some(step) = next_step(&state, &saga) else {
                return Ok(Ran::Over);
            };
            let cx = self.step_context(&saga);
            // A cancel made on another instance is looked for before the
            // capture (the one step that charges the customer), once the
            // checkout outlasted its request's wait (202: the customer has
            // the order's id to cancel) or when resuming: a checkout that
            // ends within the wait costs no read; a cancel meeting it (from
            // the order list, in another tab) is met at the finish.
            let look_elsewhere =
                step == Step::Capture && (reply.is_none() || began.elapsed() >= checkout_wait);
            if saga.direction == Direction::Forward
                && (self.take_turn(order) || (look_elsewhere && self.turned_back(order).await))
            {
                // Cancelled meanwhile: what is held is recorded, and the
                // saga read again turns before its next call.
                self.flush(order, &saga, &mut recorded, &mut held, &cx)
                    .await?;
                (state, saga) = self.read(order).await?;
                recorded = Some(state.clone());
                begun = saga.step.as_deref().and_then(Step::parse);
                continue;
            }
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
                    let finished = self
                        .finish(order, step, &saga, recorded.as_ref(), &held, &cx, reply)
                        .await?;
                    match finished {
                        Finish::Here(state) => return Ok(Ran::Finished(state)),
                        Finish::ByAnother => return Ok(Ran::Over),
                        Finish::Turned => {}
                    }
                    // Turned round meanwhile (a cancel): read it again.
                    held.clear();
                    (state, saga) = self.read(order).await?;
                    recorded = Some(state.clone());
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
                    after.apply(&event, repo::now());
                    let next = next_step(&after, &saga);
                    held.push(event);
                    let record_now =
                        saga.direction != Direction::Forward || renewed.elapsed() >= renew_every;
                    if record_now {
                        let done = self
                            .record(order, &saga, recorded.as_ref(), &held, &cx)
                            .await?;
                        let Some((now, next)) = done else {
                            return Ok(Ran::Over); // the lease was lost after the step
                        };
                        held.clear();
                        recorded = Some(now.clone());
                        (state, begun) = (now, next);
                        if let Some(next) = begun {
                            next.mark(&mut saga);
                        }
                        renewed = std::time::Instant::now();
                    } else {
                        // Held; the next step needs no intent on record.
                        state = after;
                        begun = next;
                    }
                    saga.attempts = 0;
                    self.failpoint(&format!("after_{}_recorded", step.name()));
                }
                Outcome::NoPayment => {
                    // Nothing to void and nothing to record: on to the
                    // stock, without writing that step's intent first.
                    saga.payment_attempted = false;
                    begun = next_step(&state, &saga);
                    saga.attempts = 0;
                }
                Outcome::Failed(reason) if saga.direction == Direction::Forward => {
                    self.flush(order, &saga, &mut recorded, &mut held, &cx)
                        .await?;
                    if !self.turn_back(order, &reason).await? {
                        return Ok(Ran::Over);
                    }
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
                Outcome::Refused(error) => {
                    self.flush(order, &saga, &mut recorded, &mut held, &cx)
                        .await?;
                    metrics::counter!("order_saga_steps_refused_total", "step" => step.name())
                        .increment(1);
                    tracing::warn!(order.id = %order, step = step.name(), error = %error, "the shop's own identity was refused; asked again later, never given up");
                    return Ok(Ran::Refused(format!("{}: {error}", step.name())));
                }
                Outcome::Retry(error) => {
                    self.flush(order, &saga, &mut recorded, &mut held, &cx)
                        .await?;
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
                        if !self.turn_back(order, &reason).await? {
                            return Ok(Ran::Over);
                        }
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

    fn step_context(&self, saga: &SagaRow) -> CallContext {
        let request_id = saga
            .request_id
            .as_deref()
            .and_then(RequestId::parse)
            .unwrap_or_else(RequestId::generate);
        let cx = match self.services.context(request_id.clone()) {
            Ok(cx) => cx,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign a service token");
                CallContext::for_request(request_id).with_caller(kernel::Caller::service())
            }
        };
        cx.with_timeout(Duration::from_millis(self.settings.step_timeout_ms))
    }

    /// One pass of the recovery worker: drives every saga that is due and
    /// not leased (its owner died, or it waits for a retry). Returns how
    /// many were picked.
    ///
    /// # Errors
    /// Database errors.
    pub async fn recover_due(&self) -> Result<usize, DieselError> {
        let due = {
            let mut conn = self.saga_conn().await?;
            sagas::due(&mut conn).await?
        };
        let picked = due.len();
        let mut running = tokio::task::JoinSet::new();
        for order in due {
            let saga = self.clone();
            running.spawn(async move { saga.drive(order).await });
            while running.len() >= 8 {
                running.join_next().await;
            }
        }
        while running.join_next().await.is_some() {}
        Ok(picked)
    }
}
