//! Consuming a module's queue: each sealed, decodable message is handed to the
//! [`Dispatcher`] and acked once its handler has committed; anything else is
//! rejected into the dead-letter queue.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use kernel::Envelope;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use tokio::sync::watch;

use super::RabbitMq;
use crate::{Dispatcher, TransportError};

/// The first wait before a consumer connects again.
const RECONNECT_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// The wait before the next attempt, after one that ran `ran` and failed,
/// the last wait having been `last` (zero at first): doubled while attempts fail at once
/// (a broker down, or refusing the queue's arguments, is asked again less
/// and less often, and logged so), from [`RECONNECT_FIRST`] again after a
/// consumer that had been running for a while (a new outage).
fn reconnect_wait(last: Duration, ran: Duration) -> Duration {
    if ran >= RECONNECT_MAX {
        RECONNECT_FIRST
    } else {
        last.saturating_mul(2).clamp(RECONNECT_FIRST, RECONNECT_MAX)
    }
}

impl RabbitMq {
    /// Consumes `module`'s queue (declared and bound to `event_types`) and
    /// runs its handlers, until `stop`. Reconnects after failures.
    pub async fn consume(
        self: Arc<Self>,
        module: &'static str,
        event_types: Vec<&'static str>,
        dispatcher: Arc<Dispatcher>,
        mut stop: watch::Receiver<bool>,
    ) {
        // Nothing waited yet: the first failure waits RECONNECT_FIRST.
        let mut wait = Duration::ZERO;
        // A stop, or its sender gone (the server stopped), ends it.
        while !*stop.borrow() && stop.has_changed().is_ok() {
            let began = std::time::Instant::now();
            if let Err(e) = self
                .consume_once(module, &event_types, &dispatcher, &mut stop)
                .await
            {
                wait = reconnect_wait(wait, began.elapsed());
                tracing::warn!(
                    module,
                    error = %e,
                    retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "RabbitMQ consumer failed; reconnecting"
                );
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    changed = stop.changed() => {
                        // Its sender gone: the server stopped.
                        if changed.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }

    async fn consume_once(
        self: &Arc<Self>,
        module: &'static str,
        event_types: &[&'static str],
        dispatcher: &Dispatcher,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), TransportError> {
        let channel = self.channel().await?;
        self.declare_exchanges(&channel).await?;
        let queue = self.declare_queue_on(&channel, module, event_types).await?;
        let fail = |what: &str, e: lapin::Error| TransportError(format!("{what} {queue}: {e}"));
        channel
            .basic_qos(self.settings.prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(|e| fail("cannot set prefetch on", e))?;
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                format!("shop-{module}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| fail("cannot consume", e))?;
        tracing::info!(module, queue = %queue, "consuming events from RabbitMQ");
        loop {
            let delivery = tokio::select! {
                next = consumer.next() => next,
                _ = stop.changed() => return Ok(()),
            };
            let delivery = match delivery {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => return Err(TransportError(format!("delivery failed: {e}"))),
                None => return Err(TransportError("the consumer was cancelled".to_owned())),
            };
            // Only events sealed with the deployment's service key are read:
            // a message injected by whoever reached the broker is refused.
            if !self.sealed(&delivery) {
                metrics::counter!("events_rejected_total", "module" => module, "reason" => "signature")
                    .increment(1);
                tracing::error!(
                    module,
                    "event without a valid signature; rejected to the dead-letter queue"
                );
                self.dead_letter(&delivery).await?;
                continue;
            }
            let mut event: Envelope = match serde_json::from_slice(&delivery.data) {
                Ok(event) => event,
                Err(e) => {
                    tracing::error!(module, error = %e, "undecodable message; rejected to the dead-letter queue");
                    self.dead_letter(&delivery).await?;
                    continue;
                }
            };
            // The message's headers carry the trace context (the envelope
            // does too, for transports without headers).
            if let Some(headers) = delivery.properties.headers().as_ref() {
                let header = |name: &str| match headers.inner().get(name) {
                    Some(AMQPValue::LongString(value)) => Some(value.to_string()),
                    _ => None,
                };
                if let Some(parent) = header(telemetry::trace::TRACEPARENT) {
                    event.traceparent = Some(parent);
                    event.tracestate = header(telemetry::trace::TRACESTATE);
                }
            }
            if !dispatcher.takes(module, &event.event_type) {
                unknown_type(Arc::clone(self), module, &queue, &event, delivery).await?;
                continue;
            }
            match dispatcher.dispatch(&event, Some(module)).await {
                Ok(()) => {
                    delivery
                        .ack(BasicAckOptions::default())
                        .await
                        .map_err(|e| TransportError(e.to_string()))?;
                }
                Err(e) => {
                    // The outcome could not even be recorded: give it back.
                    tracing::warn!(module, error = %e, "dispatch failed; requeued");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        })
                        .await
                        .map_err(|e| TransportError(e.to_string()))?;
                }
            }
        }
    }
}

/// How long an event of a type none of the module's handlers takes is
/// offered to the queue's consumers before it is dead-lettered
/// ([`unknown_type`]): longer than a rolling upgrade takes to run one new
/// instance of the module.
const UNKNOWN_TYPE_PATIENCE: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// How long a consumer holds such an event before putting it at the back
/// of the queue, so that consumers that do not know it pass it round once
/// a second, not in a loop.
const UNKNOWN_TYPE_PAUSE: Duration = Duration::from_secs(1);

/// The header a message put back by [`unknown_type`] carries: its first
/// give-back is logged as a warning, the next ones are not.
const GIVEN_BACK: &str = "x-shop-given-back";

/// An event of a type none of `module`'s handlers takes reached its queue.
/// The queue is bound by every version of the shop running, so during a
/// rolling upgrade that adds a subscription a consumer of the older code
/// receives the new type before the newer instances do: acked here, it
/// would be lost for them. After [`UNKNOWN_TYPE_PAUSE`] (without holding
/// up this consumer) a copy goes to the back of the queue, confirmed, and
/// this one is acked: another consumer takes it, and the events behind it
/// are not held up by it (a message nacked with requeue would go back to
/// the head, and a burst of them would hold every consumer's prefetch).
/// Published more than [`UNKNOWN_TYPE_PATIENCE`] ago, it is dead-lettered
/// instead: no instance running takes it (a rollback left the binding).
async fn unknown_type(
    rabbit: Arc<RabbitMq>,
    module: &'static str,
    queue: &str,
    event: &Envelope,
    delivery: lapin::message::Delivery,
) -> Result<(), TransportError> {
    // Offered since it was published (the message's timestamp, which a
    // copy put back keeps), not since its event occurred: an event that
    // waited in an outbox through a broker outage is new to the queue.
    // Messages of code older than the timestamp carry none.
    let published = delivery
        .properties
        .timestamp()
        .and_then(|at| i64::try_from(at).ok())
        .and_then(|at| chrono::DateTime::from_timestamp(at, 0))
        .unwrap_or(event.occurred_at);
    if chrono::Utc::now() - published > UNKNOWN_TYPE_PATIENCE {
        metrics::counter!("events_rejected_total", "module" => module, "reason" => "unknown_type")
            .increment(1);
        tracing::error!(
            module,
            event.id = %event.id,
            event.r#type = %event.event_type,
            "event of a type no handler here takes, offered to every consumer for {} minutes; \
             rejected to the dead-letter queue",
            UNKNOWN_TYPE_PATIENCE.num_minutes()
        );
        return rabbit.dead_letter(&delivery).await;
    }
    metrics::counter!("events_requeued_total", "module" => module, "reason" => "unknown_type")
        .increment(1);
    let again = delivery
        .properties
        .headers()
        .as_ref()
        .is_some_and(|headers| headers.inner().contains_key(GIVEN_BACK));
    if again {
        tracing::debug!(module, event.id = %event.id, event.r#type = %event.event_type, "event of a type no handler here takes; put back again");
    } else {
        tracing::warn!(
            module,
            event.id = %event.id,
            event.r#type = %event.event_type,
            "event of a type no handler here takes (a newer version's?); put back for another consumer"
        );
    }
    let queue = queue.to_owned();
    tokio::spawn(async move {
        tokio::time::sleep(UNKNOWN_TYPE_PAUSE).await;
        let mut copy = delivery;
        let mut headers = copy.properties.headers().clone().unwrap_or_default();
        headers.insert(GIVEN_BACK.into(), AMQPValue::Boolean(true));
        copy.properties = copy.properties.clone().with_headers(headers);
        let settled = match rabbit.to_the_back(&queue, &copy).await {
            // The copy is queued: this one goes (acked after the copy was
            // confirmed, so a crash between them leaves two, never none).
            Ok(true) => copy.ack(BasicAckOptions::default()).await,
            Ok(false) | Err(_) => {
                copy.nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await
            }
        };
        // Failing, the channel is gone, and the broker requeues it anyway.
        if let Err(e) = settled {
            tracing::debug!(error = %e, "could not settle an event put back; the broker requeues it with its channel");
        }
    });
    Ok(())
}

/// Rejects `delivery` without requeue: the queue routes it to the dead letters.
impl RabbitMq {
    /// Rejects `delivery` to the dead-letter queue, declaring the
    /// dead-letter exchange and queue again first: deleted under a running
    /// shop (by hand, or the broker's definitions reset), the broker would
    /// drop what is rejected to them without a word. A rejection is rare
    /// (a forged, undecodable or long unclaimed message): a channel of its
    /// own for the declarations costs nothing that matters.
    async fn dead_letter(&self, delivery: &lapin::message::Delivery) -> Result<(), TransportError> {
        match self.channel().await {
            Ok(channel) => {
                if let Err(e) = self.declare_exchanges(&channel).await {
                    tracing::warn!(error = %e, "cannot declare the dead-letter queue; rejecting anyway");
                }
                drop(channel.close(200, "declared".into()).await);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot declare the dead-letter queue; rejecting anyway");
            }
        }
        reject(delivery).await
    }
}

async fn reject(delivery: &lapin::message::Delivery) -> Result<(), TransportError> {
    delivery
        .nack(BasicNackOptions {
            requeue: false,
            ..BasicNackOptions::default()
        })
        .await
        .map(drop)
        .map_err(|e| TransportError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{RECONNECT_FIRST, RECONNECT_MAX, reconnect_wait};

    /// Attempts failing at once wait 1, 2, 4 ... seconds, at most 30; one
    /// after a consumer that ran for a while waits a second again.
    #[test]
    fn a_consumer_failing_at_once_waits_longer_each_time_up_to_its_cap() {
        let mut wait = Duration::ZERO;
        let mut waits = Vec::new();
        for _ in 0..7 {
            wait = reconnect_wait(wait, Duration::from_millis(10));
            waits.push(wait.as_secs());
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(
            reconnect_wait(RECONNECT_MAX, Duration::from_secs(60)),
            RECONNECT_FIRST
        );
    }
}
