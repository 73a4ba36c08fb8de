//! A relay's batch, handled with one transaction per subscription.
//!
//! One event at a time costs each subscription a transaction (inbox row,
//! handler, commit) per event. Under load the relay hands over several
//! events at once, so each subscription takes its share of the batch in
//! one transaction: one inbox statement and one commit for all of them
//! (and, where the handler can, one statement for its work:
//! [`super::EventHandler::handle_batch`], in a span linked to every
//! event's trace), with exactly the same guarantees (the inbox rows commit
//! with the handlers' effects, or nothing does). If anything in it fails, the
//! transaction rolls back and the subscription's events go one by one
//! through [`Dispatcher::dispatch`]'s path: retries, then dead letters, so
//! one poisonous event holds up nothing but itself.

use diesel::sql_types::{Array, Text, Uuid as SqlUuid};
use diesel_async::{AsyncConnection as _, RunQueryDsl};
use kernel::Envelope;
use tracing::Instrument as _;
use uuid::Uuid;

use super::{
    DispatchError, Dispatcher, Fresh, HandlerError, INBOX_AND_CLOSE, Outcome, Subscription,
    event_span, pause_in_transaction,
};

impl Dispatcher {
    /// Runs the handlers of `events` (a relay's batch, in outbox order):
    /// each subscription handles its share in order, in one transaction,
    /// falling back to one event at a time when that fails.
    ///
    /// # Errors
    /// Only when an outcome could not be recorded at all (no database): the
    /// index in `events` of the first event some subscription could not
    /// take, with its error. Every event before it was handled by every
    /// subscription; from it on the batch must be offered again (the inbox
    /// skips what was handled). A subscription that fails stops at its
    /// failure (its events must not overtake it); the others go on with
    /// the whole batch, so one handler's trouble holds up no other's.
    pub async fn dispatch_batch(&self, events: &[&Envelope]) -> Result<(), (usize, DispatchError)> {
        let mut first_failure: Option<(usize, DispatchError)> = None;
        for subscription in &self.subscriptions {
            let wanted: Vec<&Envelope> = events
                .iter()
                .copied()
                .filter(|e| subscription.event_types.contains(&e.event_type.as_str()))
                .collect();
            if wanted.len() > 1 {
                match self.run_batch_once(subscription, &wanted).await {
                    Ok(outcomes) => {
                        for outcome in outcomes {
                            Dispatcher::record(subscription.name, outcome, 1);
                        }
                        continue;
                    }
                    Err(error) => tracing::warn!(
                        handler = subscription.name,
                        events = wanted.len(),
                        error = %error,
                        "batch failed; handling its events one by one"
                    ),
                }
            }
            for event in wanted {
                let outcome = self
                    .run_with_retries(subscription, event)
                    .instrument(event_span(event))
                    .await;
                if let Err(error) = outcome {
                    let index = events.iter().position(|e| e.id == event.id).unwrap_or(0);
                    if first_failure.as_ref().is_none_or(|(i, _)| index < *i) {
                        first_failure = Some((index, error));
                    }
                    break;
                }
            }
        }
        match first_failure {
            None => Ok(()),
            Some(failure) => Err(failure),
        }
    }

    /// `events` through `subscription` in one transaction: the outcome of
    /// each, or the first failure (everything rolled back).
    async fn run_batch_once(
        &self,
        subscription: &Subscription,
        events: &[&Envelope],
    ) -> Result<Vec<Outcome>, HandlerError> {
        let mut conn = db::connection(&subscription.pool, subscription.module)
            .await
            .map_err(|e| HandlerError::transient(format!("no connection: {e}")))?;
        let pause = self.pause_in_handler;
        let mut handled: Vec<&Envelope> = Vec::with_capacity(events.len());
        let outcomes = conn
            .transaction::<_, HandlerError, _>(async |conn| {
                let ids: Vec<Uuid> = events.iter().map(|event| event.id).collect();
                // One text for every batch size (`unnest`), so it is
                // prepared once per connection; diesel's multi-row `VALUES`
                // is a new text per size, prepared and planned on each call.
                let fresh: Vec<Fresh> = db::sql(INBOX_AND_CLOSE)
                    .bind::<Array<SqlUuid>, _>(ids)
                    .bind::<Text, _>(subscription.name)
                    .load(conn)
                    .await?;
                let mut outcomes = Vec::with_capacity(events.len());
                for event in events {
                    if fresh.iter().any(|f| f.event_id == event.id) {
                        handled.push(*event);
                        outcomes.push(Outcome::Handled);
                    } else {
                        outcomes.push(Outcome::Duplicate);
                    }
                }
                // The batch's span links every event's trace; the default
                // one-by-one handling also continues each in a span of its own.
                let span = tracing::info_span!(
                    "events.batch",
                    otel.name = %format_args!("handle batch {}", subscription.name),
                    otel.kind = "consumer",
                    handler = subscription.name,
                    events = handled.len(),
                );
                for event in &handled {
                    telemetry::trace::link(
                        &span,
                        event.traceparent.as_deref(),
                        event.tracestate.as_deref(),
                    );
                }
                super::handler::guarded(
                    subscription
                        .handler
                        .handle_batch(conn, &handled)
                        .instrument(span),
                )
                .await?;
                pause_in_transaction(pause).await;
                Ok(outcomes)
            })
            .await;
        let committed = outcomes.is_ok();
        for event in handled {
            subscription.handler.finished(event, committed).await;
        }
        outcomes
    }
}
