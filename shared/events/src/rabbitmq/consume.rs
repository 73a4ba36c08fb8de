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
        while !*stop.borrow() {
            if let Err(e) = self
                .consume_once(module, &event_types, &dispatcher, &mut stop)
                .await
            {
                tracing::warn!(module, error = %e, "RabbitMQ consumer failed; reconnecting");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }

    async fn consume_once(
        &self,
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
                dead_letter(&delivery).await?;
                continue;
            }
            let mut event: Envelope = match serde_json::from_slice(&delivery.data) {
                Ok(event) => event,
                Err(e) => {
                    tracing::error!(module, error = %e, "undecodable message; rejected to the dead-letter queue");
                    dead_letter(&delivery).await?;
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
                unknown_type(module, &event, &delivery).await?;
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
/// given back to the queue for another consumer before it is dead-lettered
/// ([`unknown_type`]): longer than a rolling upgrade takes to run one new
/// instance of the module.
const UNKNOWN_TYPE_PATIENCE: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// How long a consumer holds such an event before giving it back, so that
/// consumers that do not know it pass it round once a second, not in a loop.
const UNKNOWN_TYPE_PAUSE: Duration = Duration::from_secs(1);

/// An event of a type none of `module`'s handlers takes reached its queue.
/// The queue is bound by every version of the shop running, so during a
/// rolling upgrade that adds a subscription a consumer of the older code
/// receives the new type before the newer instances do: acked here, it
/// would be lost for them. It is given back after [`UNKNOWN_TYPE_PAUSE`]
/// (without holding up this consumer) for another consumer to take, while
/// it is younger than [`UNKNOWN_TYPE_PATIENCE`]; older, no instance running
/// takes it (a rollback left the newer binding), and it is dead-lettered
/// for an operator rather than passed round for ever.
async fn unknown_type(
    module: &'static str,
    event: &Envelope,
    delivery: &lapin::message::Delivery,
) -> Result<(), TransportError> {
    let age = chrono::Utc::now() - event.occurred_at;
    if age > UNKNOWN_TYPE_PATIENCE {
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
        return dead_letter(delivery).await;
    }
    metrics::counter!("events_requeued_total", "module" => module, "reason" => "unknown_type")
        .increment(1);
    tracing::warn!(
        module,
        event.id = %event.id,
        event.r#type = %event.event_type,
        "event of a type no handler here takes (a newer version's?); given back for another consumer"
    );
    let acker = delivery.acker.clone();
    tokio::spawn(async move {
        tokio::time::sleep(UNKNOWN_TYPE_PAUSE).await;
        // Failing, the channel is gone, and the broker requeues it anyway.
        let requeue = BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        };
        if let Err(e) = acker.nack(requeue).await {
            tracing::debug!(error = %e, "could not give an event back; the broker requeues it with its channel");
        }
    });
    Ok(())
}

/// Rejects `delivery` without requeue: the queue routes it to the dead letters.
async fn dead_letter(delivery: &lapin::message::Delivery) -> Result<(), TransportError> {
    delivery
        .nack(BasicNackOptions {
            requeue: false,
            ..BasicNackOptions::default()
        })
        .await
        .map(drop)
        .map_err(|e| TransportError(e.to_string()))
}
