//! The saga's bookkeeping: its lease, and what it records in `sagas` and
//! `order_events` between calls (a step's intent before it runs, the
//! results after, the turn back, the end).

use std::time::Duration;

use diesel::result::Error as DieselError;
use diesel_async::{AsyncConnection as _, AsyncPgConnection};
use kernel::{CallContext, OrderId};

use super::Saga;
use super::step::{Step, next_step};
use crate::domain::{OrderEvent, OrderState};
use crate::repo::{self, AppendError, Appended, SagaOutcome, SagaRow, keys, sagas};

impl Saga {
    /// Takes (or renews) the saga's lease for this run.
    pub(super) async fn lease(&self, order: OrderId) -> Result<bool, DieselError> {
        let mut conn = self.saga_conn().await?;
        sagas::lease(&mut conn, order, self.owner, self.settings.lease_secs).await
    }

    /// Gives the lease up until a retry `wait` from now, counting the
    /// attempt when `counted`.
    pub(super) async fn unlease(&self, order: OrderId, wait: Duration, error: &str, counted: bool) {
        let Ok(mut conn) = db::connection(&self.pool, crate::NAME).await else {
            return; // the lease expires by itself
        };
        let result = sagas::unlease(&mut conn, order, self.owner, wait, error, counted).await;
        if let Err(e) = result {
            tracing::warn!(order.id = %order, error = %e, "could not release the saga lease");
        }
    }

    pub(super) async fn attempts(&self, order: OrderId) -> u32 {
        let Ok(mut conn) = db::connection(&self.pool, crate::NAME).await else {
            return 0;
        };
        sagas::load(&mut conn, order, false)
            .await
            .map(|s| u32::try_from(s.attempts).unwrap_or(0))
            .unwrap_or(0)
    }

    /// The order's state and saga as recorded.
    pub(super) async fn read(&self, order: OrderId) -> Result<(OrderState, SagaRow), DieselError> {
        let mut conn = self.saga_conn().await?;
        let state = repo::load_state(&mut conn, order, false)
            .await?
            .ok_or(DieselError::NotFound)?;
        let saga = sagas::load(&mut conn, order, false).await?;
        Ok((state, saga))
    }

    /// Records the held results, if any (before turning back or waiting);
    /// `recorded` follows (`None`: not known, read it under the lock).
    pub(super) async fn flush(
        &self,
        order: OrderId,
        saga: &SagaRow,
        recorded: &mut Option<OrderState>,
        held: &mut Vec<OrderEvent>,
        cx: &CallContext,
    ) -> Result<(), DieselError> {
        if !held.is_empty() {
            let done = self
                .record(order, saga, recorded.as_ref(), held, cx)
                .await?;
            *recorded = done.map(|(state, _)| state);
            held.clear();
        }
        Ok(())
    }

    /// Records the step about to run (and renews the lease); false when the
    /// lease is no longer ours.
    pub(super) async fn begin(&self, order: OrderId, step: Step) -> Result<bool, DieselError> {
        let mut conn = self.saga_conn().await?;
        let lease = self.settings.lease_secs;
        sagas::begin(&mut conn, order, self.owner, step.name(), lease).await
    }

    /// Records steps' results and, in the same transaction, the intent of
    /// the step that follows (as [`Self::begin`] would, lease renewed).
    /// `known` is the order as last recorded, if known (see [`append`]).
    /// Returns the new state and the step begun, or `None` when the lease is
    /// no longer ours (the results are recorded all the same: they happened).
    pub(super) async fn record(
        &self,
        order: OrderId,
        saga: &SagaRow,
        known: Option<&OrderState>,
        events: &[OrderEvent],
        cx: &CallContext,
    ) -> Result<Option<(OrderState, Option<Step>)>, DieselError> {
        let mut conn = self.saga_conn().await?;
        let mut known = known;
        loop {
            let attempt = conn
                .transaction::<_, Attempt, _>(async |conn| {
                    // From the state known, the events are folded without
                    // writing them yet, so that their writes and the saga's
                    // are pipelined (one round trip, ADR 0015); else they
                    // are appended under the order's lock first.
                    // The saga's row is locked before the order's, as a
                    // cancel and the last step lock them: in the other
                    // order, a cancel meeting a record would deadlock.
                    let (state, writes) = match known {
                        Some(known) => {
                            let (state, writes) = fold_known(known, events, cx)?;
                            (state, Some(writes))
                        }
                        None => {
                            sagas::load(conn, order, true).await?;
                            (append(conn, order, None, events, cx).await?, None)
                        }
                    };
                    let next = next_step(&state, saga);
                    let name = next.map(Step::name);
                    let lease = self.settings.lease_secs;
                    let conn: &AsyncPgConnection = conn;
                    let recorded = sagas::recorded(conn, order, self.owner, name, lease);
                    let ours = match writes {
                        Some(writes) => {
                            // Pipelined in this order: the saga's row first.
                            let (ours, written) =
                                futures_util::future::join(recorded, writes.write(conn, &state))
                                    .await;
                            stale_if_collided(written)?;
                            ours?
                        }
                        None => recorded.await?,
                    };
                    Ok(ours.then_some((state, next)))
                })
                .await;
            match attempt {
                Ok(done) => {
                    events::outbox::wake(crate::NAME);
                    return Ok(done);
                }
                Err(Attempt::Stale) => known = None, // again, reading it under the lock
                Err(Attempt::Db(e)) => return Err(e),
            }
        }
    }

    /// The forward run failed for good: compensate, and fail the order.
    /// False when the lease is no longer ours: nothing is turned (the run
    /// that holds it goes on, and may yet complete the order).
    pub(super) async fn turn_back(
        &self,
        order: OrderId,
        reason: &str,
    ) -> Result<bool, DieselError> {
        let mut conn = self.saga_conn().await?;
        let turned = sagas::turn_back(&mut conn, order, self.owner, reason).await?;
        if turned {
            tracing::info!(order.id = %order, reason = %reason, "checkout failed; compensating");
            metrics::counter!("order_sagas_compensated_total").increment(1);
        } else {
            tracing::info!(order.id = %order, reason = %reason, "checkout failed in a run that lost its lease; left to the run that holds it");
        }
        Ok(turned)
    }

    /// The last step: confirm (forward) or fail / cancel (backward), with
    /// the saga marked done (and its lease cleared) in the same transaction,
    /// and the placing request's response kept under its key if `reply`
    /// names one that keeps none yet.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn finish(
        &self,
        order: OrderId,
        step: Step,
        seen: &SagaRow,
        known: Option<&OrderState>,
        held: &[OrderEvent],
        cx: &CallContext,
        reply: Option<&Reply>,
    ) -> Result<Finish, DieselError> {
        let mut conn = self.saga_conn().await?;
        let mut known = known;
        let finished = loop {
            let attempt = conn
                .transaction::<_, Attempt, _>(async |conn| {
                    if let (Some(known), Step::Confirm) = (known, step) {
                        return confirm_known(conn, order, seen, known, held, cx, reply).await;
                    }
                    // Done here if still going the way this run saw (the
                    // row stays locked to the commit, as a cancel locks it).
                    let ended = sagas::mark_done(conn, order, seen.direction).await?;
                    let Some((outcome, reason)) = ended else {
                        let saga = sagas::load(conn, order, true).await?;
                        if saga.done {
                            return Ok(Finish::ByAnother);
                        }
                        if saga.direction == seen.direction {
                            return Err(Attempt::Db(DieselError::NotFound)); // cannot be: retried
                        }
                        // Turned round meanwhile (a cancel): the results
                        // held back are recorded all the same (they
                        // happened), the last step's event is not.
                        if !held.is_empty() {
                            append(conn, order, known, held, cx).await?;
                        }
                        return Ok(Finish::Turned);
                    };
                    let mut events = held.to_vec();
                    events.push(match step {
                        Step::Confirm => OrderEvent::Confirmed,
                        _ => {
                            let reason = reason.unwrap_or_else(|| "unknown".into());
                            if outcome == Some(SagaOutcome::Cancelled) {
                                OrderEvent::Cancelled { reason }
                            } else {
                                OrderEvent::Failed { reason }
                            }
                        }
                    });
                    let state = append(conn, order, known, &events, cx).await?;
                    if let Some(reply) = reply {
                        // What `POST /orders` answers for a settled order.
                        let body = serde_json::to_value(state.to_order())
                            .map_err(|e| DieselError::SerializationError(Box::new(e)))?;
                        keys::store_first_response(conn, reply.customer, &reply.key, 201, &body)
                            .await?;
                    }
                    Ok(Finish::Here(Box::new(state)))
                })
                .await;
            match attempt {
                Ok(finished) => break finished,
                Err(Attempt::Stale) => known = None, // again, reading it under the lock
                Err(Attempt::Db(e)) => return Err(e),
            }
        };
        events::outbox::wake(crate::NAME);
        if !matches!(finished, Finish::Here(_)) {
            return Ok(finished);
        }
        self.failpoint(&format!("after_{}_recorded", step.name()));
        let outcome = match step {
            Step::Confirm => "confirmed",
            _ => "compensated",
        };
        metrics::counter!("order_sagas_finished_total", "outcome" => outcome).increment(1);
        Ok(finished)
    }
}

/// The idempotency key of the request that placed an order and waits for
/// its saga: the saga's last step keeps that request's answer (201 and the
/// settled order) in its own transaction, a write less per checkout, and a
/// crash after it leaves the key answered.
pub(crate) struct Reply {
    pub(crate) customer: uuid::Uuid,
    pub(crate) key: String,
}

/// How [`Saga::finish`] went.
pub(super) enum Finish {
    /// Finished here: the order as the last step committed it.
    Here(Box<OrderState>),
    /// Another driver had finished it: nothing done.
    ByAnother,
    /// The saga turned round meanwhile (a cancel): the results held were
    /// recorded, the last step was not.
    Turned,
}

/// Why a transaction of the saga's bookkeeping did not commit.
enum Attempt {
    /// The order moved on since the state known: try again, reading it.
    Stale,
    Db(DieselError),
}

impl From<DieselError> for Attempt {
    fn from(e: DieselError) -> Attempt {
        Attempt::Db(e)
    }
}

/// The confirm step from the state `known`: its event, and so the answer
/// kept under the key, are known before anything is written, so the saga
/// marked done, the events' writes and the answer are pipelined (one round
/// trip, ADR 0015). When the saga was not marked (done by another, or
/// turned round by a cancel) or the order moved on, nothing is kept:
/// [`Attempt::Stale`], and [`Saga::finish`] does it again under the locks.
async fn confirm_known(
    conn: &AsyncPgConnection,
    order: OrderId,
    seen: &SagaRow,
    known: &OrderState,
    held: &[OrderEvent],
    cx: &CallContext,
    reply: Option<&Reply>,
) -> Result<Finish, Attempt> {
    let mut events = held.to_vec();
    events.push(OrderEvent::Confirmed);
    let (state, writes) = fold_known(known, &events, cx)?;
    let kept = match reply {
        // What `POST /orders` answers for a settled order.
        Some(reply) => Some((
            reply,
            serde_json::to_value(state.to_order())
                .map_err(|e| DieselError::SerializationError(Box::new(e)))?,
        )),
        None => None,
    };
    let keep = async {
        match &kept {
            Some((reply, body)) => {
                keys::store_first_response(conn, reply.customer, &reply.key, 201, body).await
            }
            None => Ok(()),
        }
    };
    // The saga's row first: locked to the commit, as a cancel locks it.
    let (ended, written, kept) = futures_util::future::join3(
        sagas::mark_done(conn, order, seen.direction),
        writes.write(conn, &state),
        keep,
    )
    .await;
    if ended?.is_none() {
        return Err(Attempt::Stale);
    }
    stale_if_collided(written)?;
    kept?;
    Ok(Finish::Here(Box::new(state)))
}

/// `known` with `events` folded in, and what that writes; stale when it
/// accepts none of them (read it under the lock).
fn fold_known<'a>(
    known: &OrderState,
    events: &[OrderEvent],
    cx: &'a CallContext,
) -> Result<(OrderState, repo::Writes<'a>), Attempt> {
    let mut state = known.clone();
    match repo::fold_into(&mut state, events, cx)? {
        Some(writes) => Ok((state, writes)),
        None => Err(Attempt::Stale),
    }
}

/// A write of folded events; stale when they collide with events appended
/// meanwhile ([`repo::collided`]).
fn stale_if_collided(written: Result<(), DieselError>) -> Result<(), Attempt> {
    match written {
        Err(e) if repo::collided(&e) => Err(Attempt::Stale),
        other => Ok(other?),
    }
}

/// Appends inside the saga's bookkeeping: from the state `known` without
/// reading the order again ([`repo::append_known`]: two statements fewer
/// per checkout), else under the order's lock ([`repo::append_all`]). A
/// refused or missing order is a database error like any other here (the
/// step is retried).
async fn append(
    conn: &mut diesel_async::AsyncPgConnection,
    order: OrderId,
    known: Option<&OrderState>,
    events: &[OrderEvent],
    cx: &CallContext,
) -> Result<OrderState, Attempt> {
    if let Some(known) = known {
        return match repo::append_known(conn, known, events, cx).await? {
            Appended::Done(state) => Ok(state),
            Appended::Stale => Err(Attempt::Stale),
        };
    }
    match repo::append_all(conn, order, events, cx).await {
        Ok(state) => Ok(state),
        Err(AppendError::Db(e)) => Err(Attempt::Db(e)),
        Err(AppendError::Refused(_) | AppendError::NotFound) => {
            Err(Attempt::Db(DieselError::NotFound))
        }
    }
}
