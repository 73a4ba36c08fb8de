//! Running handlers: once per event (inbox), retried, then dead-lettered.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::dsl::now;
use diesel::prelude::*;
use diesel::sql_types::{Array, Text, Uuid as SqlUuid};
use diesel_async::{AsyncConnection as _, RunQueryDsl};
use kernel::Envelope;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::EventsSettings;
use crate::tables::dead_letters;

/// Writes the inbox rows of a handler's events (`$1`, `$2`), skipping
/// those it handled already, and closes the open dead letters of the
/// events it takes now: an event offered again after it was set aside (an
/// ack lost, a publisher's retry, an outbox row offered again) and handled
/// this time leaves nothing for an operator to redrive. One statement, so
/// a handler costs no round trip more; the close commits with the
/// handler's work, or rolls back with it. The partial unique index
/// `dead_letters_open_once` finds the open ones. Raw: a data-modifying CTE,
/// and one text for any number of events, prepared once per connection.
const INBOX_AND_CLOSE: &str = "WITH fresh AS (\
    INSERT INTO inbox (event_id, handler) SELECT unnest($1::uuid[]), $2 \
    ON CONFLICT DO NOTHING RETURNING event_id), \
    closed AS (UPDATE dead_letters SET redriven_at = now() \
    WHERE handler = $2 AND redriven_at IS NULL \
    AND event_id IN (SELECT event_id FROM fresh)) \
    SELECT event_id FROM fresh";

/// An inbox row [`INBOX_AND_CLOSE`] wrote (its event was new).
#[derive(diesel::QueryableByName)]
struct Fresh {
    #[diesel(sql_type = SqlUuid)]
    event_id: Uuid,
}

/// What happened to one event at one handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Handled,
    Duplicate,
}

/// Dispatching failed for a reason outside the handlers (the database is
/// down); the event must be offered again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DispatchError(String);

/// An event a handler gave up on.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, diesel::Queryable)]
pub struct DeadLetter {
    /// Dead letter id.
    pub id: Uuid,
    /// The module whose handler failed.
    pub module: String,
    /// The handler.
    pub handler: String,
    /// The event's id.
    pub event_id: Uuid,
    /// The event's type.
    pub event_type: String,
    /// Tries made.
    pub attempts: i32,
    /// The last failure.
    pub last_error: String,
    /// When it was dead-lettered.
    pub created_at: DateTime<Utc>,
}

/// The consumer span of `event`'s handling, continuing its publisher's trace.
fn event_span(event: &Envelope) -> tracing::Span {
    let span = tracing::info_span!(
        "event",
        event.id = %event.id,
        event.type = %event.event_type,
        request_id = event.request_id.as_deref().unwrap_or(""),
        otel.name = %format_args!("handle {}", event.event_type),
        otel.kind = "consumer",
    );
    telemetry::trace::continue_trace(
        &span,
        event.traceparent.as_deref(),
        event.tracestate.as_deref(),
    );
    span
}

/// Fault injection for tests (`events.pause_in_handler_ms`): holds the
/// handler's transaction open for `pause`, so a test can kill the process
/// inside it.
async fn pause_in_transaction(pause: Duration) {
    if !pause.is_zero() {
        tracing::warn!(
            pause_ms = pause.as_millis() as u64,
            "fault injection: pausing inside the handler's transaction"
        );
        tokio::time::sleep(pause).await;
    }
}

/// Runs every subscription that wants an event.
pub struct Dispatcher {
    subscriptions: Vec<Subscription>,
    max_attempts: u32,
    retry_base: Duration,
    retry_max: Duration,
    pause_in_handler: Duration,
}

impl Dispatcher {
    /// A dispatcher for `subscriptions` with the retry policy of `settings`.
    pub fn new(subscriptions: Vec<Subscription>, settings: &EventsSettings) -> Dispatcher {
        Dispatcher {
            subscriptions,
            max_attempts: settings.max_attempts.max(1),
            retry_base: Duration::from_millis(settings.retry_base_ms),
            retry_max: Duration::from_millis(settings.retry_max_ms),
            pause_in_handler: Duration::from_millis(settings.pause_in_handler_ms),
        }
    }

    /// Every handler this dispatcher runs, with the event types it takes.
    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subscriptions
    }

    /// Whether a handler of `module` takes events of `event_type`.
    pub fn takes(&self, module: &str, event_type: &str) -> bool {
        self.subscriptions
            .iter()
            .any(|s| s.module == module && s.event_types.contains(&event_type))
    }

    /// Runs the handlers of `event` (only `module`'s, when given). Each
    /// handler is tried up to `max_attempts` times, then dead-lettered.
    ///
    /// # Errors
    /// Only when a handler's outcome could not be recorded at all (no
    /// database): the event must be offered again.
    pub async fn dispatch(
        &self,
        event: &Envelope,
        module: Option<&str>,
    ) -> Result<(), DispatchError> {
        async {
            for subscription in self.subscriptions.iter().filter(|s| {
                s.event_types.contains(&event.event_type.as_str())
                    && module.is_none_or(|m| m == s.module)
            }) {
                self.run_with_retries(subscription, event).await?;
            }
            Ok(())
        }
        .instrument(event_span(event))
        .await
    }

    /// Counts and logs what happened to `event` at `handler`.
    fn record(handler: &'static str, outcome: Outcome, attempt: u32) {
        match outcome {
            Outcome::Handled => {
                metrics::counter!("events_handled_total", "handler" => handler, "outcome" => "handled").increment(1);
                tracing::info!(handler, attempt, "event handled");
            }
            Outcome::Duplicate => {
                metrics::counter!("events_handled_total", "handler" => handler, "outcome" => "duplicate").increment(1);
                tracing::info!(handler, "event already handled; skipped");
            }
        }
    }

    async fn run_with_retries(
        &self,
        subscription: &Subscription,
        event: &Envelope,
    ) -> Result<(), DispatchError> {
        let handler = subscription.name;
        let mut last_error = HandlerError::new("");
        for attempt in 1..=self.max_attempts {
            match self.run_once(subscription, event).await {
                Ok(outcome) => {
                    Dispatcher::record(handler, outcome, attempt);
                    return Ok(());
                }
                Err(error) => {
                    tracing::warn!(handler, attempt, error = %error, transient = error.is_transient(), "handler failed");
                    last_error = error;
                    if attempt < self.max_attempts {
                        metrics::counter!("events_handled_total", "handler" => handler, "outcome" => "retried").increment(1);
                        tokio::time::sleep(self.backoff(attempt)).await;
                    }
                }
            }
        }
        if last_error.is_transient() {
            // The database's failure, not the event's: offered again later
            // (a consumer requeues it, the relay sends it again), never
            // left for an operator to redrive.
            metrics::counter!("events_handled_total", "handler" => handler, "outcome" => "deferred").increment(1);
            return Err(DispatchError(format!(
                "{handler}: the database cannot answer now: {last_error}"
            )));
        }
        let last_error = last_error.message();
        self.dead_letter(subscription, event, last_error).await?;
        metrics::counter!("events_handled_total", "handler" => handler, "outcome" => "dead_lettered").increment(1);
        tracing::error!(handler, attempts = self.max_attempts, error = %last_error, "event dead-lettered");
        Ok(())
    }

    /// Full jitter: a random delay up to `base * 2^(attempt-1)`, capped.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .retry_base
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.retry_max);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::thread_rng().gen_range(0..=millis))
    }

    async fn run_once(
        &self,
        subscription: &Subscription,
        event: &Envelope,
    ) -> Result<Outcome, HandlerError> {
        let mut conn = db::connection(&subscription.pool, subscription.module)
            .await
            .map_err(|e| HandlerError::transient(format!("no connection: {e}")))?;
        let pause = self.pause_in_handler;
        let outcome = conn
            .transaction::<_, HandlerError, _>(async |conn| {
                let fresh: Vec<Fresh> = db::sql(INBOX_AND_CLOSE)
                    .bind::<Array<SqlUuid>, _>(vec![event.id])
                    .bind::<Text, _>(subscription.name)
                    .load(conn)
                    .await?;
                if fresh.is_empty() {
                    return Ok(Outcome::Duplicate);
                }
                handler::guarded(subscription.handler.handle(conn, event)).await?;
                pause_in_transaction(pause).await;
                Ok(Outcome::Handled)
            })
            .await;
        let committed = matches!(outcome, Ok(Outcome::Handled));
        subscription.handler.finished(event, committed).await;
        outcome
    }

    async fn dead_letter(
        &self,
        subscription: &Subscription,
        event: &Envelope,
        error: &str,
    ) -> Result<(), DispatchError> {
        let envelope = serde_json::to_value(event).map_err(|e| DispatchError(e.to_string()))?;
        let mut conn = db::connection(&subscription.pool, subscription.module)
            .await
            .map_err(|e| DispatchError(format!("cannot dead-letter: {e}")))?;
        diesel::insert_into(dead_letters::table)
            .values((
                dead_letters::id.eq(Uuid::now_v7()),
                dead_letters::handler.eq(subscription.name),
                dead_letters::event_id.eq(event.id),
                dead_letters::event_type.eq(&event.event_type),
                dead_letters::envelope.eq(envelope),
                dead_letters::attempts.eq(i32::try_from(self.max_attempts).unwrap_or(i32::MAX)),
                dead_letters::last_error.eq(error),
            ))
            // Already dead-lettered and not redriven yet: one is enough
            // (`dead_letters_open_once`).
            .on_conflict_do_nothing()
            .execute(&mut conn)
            .await
            .map_err(|e| DispatchError(format!("cannot dead-letter: {e}")))?;
        Ok(())
    }

    /// Open dead letters of every module with subscriptions here, oldest
    /// first, after `after`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn dead_letters(
        &self,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<DeadLetter>, DispatchError> {
        let mut all = Vec::new();
        for (module, pool) in self.module_pools() {
            let mut conn = db::connection(&pool, module)
                .await
                .map_err(|e| DispatchError(e.to_string()))?;
            let mut query = dead_letters::table
                .filter(dead_letters::redriven_at.is_null())
                .order(dead_letters::id)
                .limit(limit)
                .select((
                    dead_letters::id,
                    module.into_sql::<Text>(),
                    dead_letters::handler,
                    dead_letters::event_id,
                    dead_letters::event_type,
                    dead_letters::attempts,
                    dead_letters::last_error,
                    dead_letters::created_at,
                ))
                .into_boxed();
            if let Some(after) = after {
                query = query.filter(dead_letters::id.gt(after));
            }
            let mut rows: Vec<DeadLetter> = query
                .load(&mut conn)
                .await
                .map_err(|e| DispatchError(e.to_string()))?;
            all.append(&mut rows);
        }
        all.sort_by_key(|d| d.id);
        all.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(all)
    }

    /// Runs a dead letter's handler again (once, through the inbox). On
    /// success the dead letter is closed; on failure its error is updated.
    ///
    /// # Errors
    /// `Ok(None)` for an unknown id; `Ok(Some(Err))` when the handler failed again.
    pub async fn redrive(&self, id: Uuid) -> Result<Option<Result<(), String>>, DispatchError> {
        for (module, pool) in self.module_pools() {
            let mut conn = db::connection(&pool, module)
                .await
                .map_err(|e| DispatchError(e.to_string()))?;
            let found: Option<(String, serde_json::Value)> = dead_letters::table
                .find(id)
                .filter(dead_letters::redriven_at.is_null())
                .select((dead_letters::handler, dead_letters::envelope))
                .first(&mut conn)
                .await
                .optional()
                .map_err(|e| DispatchError(e.to_string()))?;
            let Some((handler, envelope)) = found else {
                continue;
            };
            let event: Envelope =
                serde_json::from_value(envelope).map_err(|e| DispatchError(e.to_string()))?;
            let Some(subscription) = self.subscriptions.iter().find(|s| s.name == handler) else {
                return Ok(Some(Err(format!(
                    "no handler `{handler}` runs in this process"
                ))));
            };
            let outcome = self.run_once(subscription, &event).await;
            let closed = diesel::update(dead_letters::table.find(id));
            match &outcome {
                Ok(_) => {
                    closed
                        .set(dead_letters::redriven_at.eq(now))
                        .execute(&mut conn)
                        .await
                }
                Err(e) => {
                    closed
                        .set((
                            dead_letters::attempts.eq(dead_letters::attempts + 1),
                            dead_letters::last_error.eq(e.message()),
                        ))
                        .execute(&mut conn)
                        .await
                }
            }
            .map_err(|e| DispatchError(e.to_string()))?;
            tracing::info!(dead_letter.id = %id, ok = outcome.is_ok(), "dead letter redriven");
            return Ok(Some(
                outcome.map(|_| ()).map_err(|e| e.message().to_owned()),
            ));
        }
        Ok(None)
    }

    /// One pool per subscribing module.
    fn module_pools(&self) -> Vec<(&'static str, db::Pool)> {
        let mut pools: Vec<(&'static str, db::Pool)> = Vec::new();
        for s in &self.subscriptions {
            if !pools.iter().any(|(m, _)| *m == s.module) {
                pools.push((s.module, s.pool.clone()));
            }
        }
        pools
    }
}

mod batch;
mod handler;

pub use handler::{EventHandler, HandlerError, Subscription, one_by_one};
#[cfg(test)]
mod tests;
