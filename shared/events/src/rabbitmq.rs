//! The RabbitMQ transport: one topic exchange, one durable queue per
//! subscribing module, publisher confirms, acks after the handler commits.
//!
//! Names (`<ns>` = `events.rabbitmq.namespace`): exchange `<ns>.events`
//! (topic, routing key = event type); queue `<ns>.<module>` bound to the
//! event types the module handles; undecodable messages are rejected into
//! `<ns>.dead-letters` through the `<ns>.dlx` exchange. Handler failures are
//! retried and dead-lettered by the [`Dispatcher`](crate::Dispatcher) into
//! the module's `dead_letters` table, as in process.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use kernel::Envelope;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{Mutex, watch};

use crate::{Dispatcher, RabbitMqSettings, Transport, TransportError};

/// A connection to the broker, shared by the publisher and the consumers.
pub struct RabbitMq {
    settings: RabbitMqSettings,
    /// Signs what this process publishes and checks what it consumes.
    seal: auth::EventSeal,
    connection: Mutex<Option<Connection>>,
    publisher: Mutex<Option<Channel>>,
    /// Every queue declared through this connection and its event types:
    /// an event of one of these types that the broker returns unrouted
    /// lost its queue, which is declared again before the event is retried.
    declared: std::sync::Mutex<Vec<(&'static str, Vec<&'static str>)>>,
}

impl RabbitMq {
    /// Connects and declares the exchanges. Every message published is
    /// signed with `seal`, and every message consumed must carry its
    /// signature (ADR 0018).
    ///
    /// # Errors
    /// The broker cannot be reached or refuses the declarations.
    pub async fn connect(
        settings: RabbitMqSettings,
        seal: auth::EventSeal,
    ) -> Result<Arc<RabbitMq>, TransportError> {
        let rabbit = Arc::new(RabbitMq {
            settings,
            seal,
            connection: Mutex::new(None),
            publisher: Mutex::new(None),
            declared: std::sync::Mutex::default(),
        });
        let channel = rabbit.channel().await?;
        rabbit.declare_exchanges(&channel).await?;
        Ok(rabbit)
    }

    fn exchange(&self) -> String {
        format!("{}.events", self.settings.namespace)
    }

    /// Whether the connection is up (readiness).
    pub async fn is_connected(&self) -> bool {
        self.connection
            .lock()
            .await
            .as_ref()
            .is_some_and(|c| c.status().connected())
    }

    /// A new channel, reconnecting first if the connection is gone.
    async fn channel(&self) -> Result<Channel, TransportError> {
        let mut guard = self.connection.lock().await;
        let usable = guard.as_ref().is_some_and(|c| c.status().connected());
        if !usable {
            let connection =
                Connection::connect(&self.settings.url, ConnectionProperties::default())
                    .await
                    .map_err(|e| TransportError(format!("cannot connect to RabbitMQ: {e}")))?;
            *guard = Some(connection);
        }
        let connection = guard
            .as_ref()
            .ok_or_else(|| TransportError("no RabbitMQ connection".to_owned()))?;
        connection
            .create_channel()
            .await
            .map_err(|e| TransportError(format!("cannot open a channel: {e}")))
    }

    async fn declare_exchanges(&self, channel: &Channel) -> Result<(), TransportError> {
        let ns = &self.settings.namespace;
        let options = ExchangeDeclareOptions {
            durable: true,
            auto_delete: self.settings.queue_ttl_ms.is_some(),
            ..ExchangeDeclareOptions::default()
        };
        for (name, kind) in [
            (self.exchange(), ExchangeKind::Topic),
            (format!("{ns}.dlx"), ExchangeKind::Fanout),
        ] {
            channel
                .exchange_declare(name.as_str().into(), kind, options, FieldTable::default())
                .await
                .map_err(|e| TransportError(format!("cannot declare exchange {name}: {e}")))?;
        }
        let dlq = format!("{ns}.dead-letters");
        channel
            .queue_declare(
                dlq.as_str().into(),
                self.queue_options(),
                self.queue_args(false),
            )
            .await
            .map_err(|e| TransportError(format!("cannot declare {dlq}: {e}")))?;
        channel
            .queue_bind(
                dlq.as_str().into(),
                format!("{ns}.dlx").as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| TransportError(format!("cannot bind {dlq}: {e}")))?;
        Ok(())
    }

    fn queue_options(&self) -> QueueDeclareOptions {
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        }
    }

    fn queue_args(&self, dead_letter: bool) -> FieldTable {
        let mut args = FieldTable::default();
        if dead_letter {
            args.insert(
                ShortString::from("x-dead-letter-exchange"),
                AMQPValue::LongString(format!("{}.dlx", self.settings.namespace).into()),
            );
        }
        if let Some(ttl) = self.settings.queue_ttl_ms {
            args.insert(
                ShortString::from("x-expires"),
                AMQPValue::LongLongInt(i64::try_from(ttl).unwrap_or(i64::MAX)),
            );
        }
        args
    }

    /// Declares `module`'s queue and binds it to `event_types`, so that
    /// events published from now on wait there for the consumer. Startup
    /// awaits it before any relay runs: an event published to a topic
    /// exchange before its queue is bound would be dropped by the broker.
    ///
    /// # Errors
    /// The broker refuses or cannot be reached.
    pub async fn declare_queue(
        &self,
        module: &'static str,
        event_types: &[&'static str],
    ) -> Result<(), TransportError> {
        let channel = self.channel().await?;
        self.declare_queue_on(&channel, module, event_types).await?;
        // Best effort: the channel is not needed any more.
        let _ = channel.close(200, "declared".into()).await;
        let mut declared = self
            .declared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !declared.iter().any(|(m, _)| *m == module) {
            declared.push((module, event_types.to_vec()));
        }
        Ok(())
    }

    /// The queues declared for `event_type`'s subscribers, declared again.
    /// `false` when no subscriber of `event_type` is known.
    async fn redeclare_for(&self, event_type: &str) -> Result<bool, TransportError> {
        let queues: Vec<(&'static str, Vec<&'static str>)> = self
            .declared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(_, types)| types.contains(&event_type))
            .cloned()
            .collect();
        if queues.is_empty() {
            return Ok(false);
        }
        let channel = self.channel().await?;
        for (module, types) in &queues {
            self.declare_queue_on(&channel, module, types).await?;
        }
        let _ = channel.close(200, "declared".into()).await;
        Ok(true)
    }

    async fn declare_queue_on(
        &self,
        channel: &Channel,
        module: &'static str,
        event_types: &[&'static str],
    ) -> Result<String, TransportError> {
        let queue = format!("{}.{module}", self.settings.namespace);
        let fail = |what: &str, e: lapin::Error| TransportError(format!("{what} {queue}: {e}"));
        channel
            .queue_declare(
                queue.as_str().into(),
                self.queue_options(),
                self.queue_args(true),
            )
            .await
            .map_err(|e| fail("cannot declare", e))?;
        for event_type in event_types {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    self.exchange().as_str().into(),
                    (*event_type).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| fail("cannot bind", e))?;
        }
        Ok(queue)
    }

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

#[async_trait::async_trait]
impl Transport for RabbitMq {
    async fn publish(&self, event: &Envelope) -> Result<(), TransportError> {
        let payload = serde_json::to_vec(event).map_err(|e| TransportError(e.to_string()))?;
        let mut publisher = self.publisher.lock().await;
        if publisher.as_ref().is_none_or(|c| !c.status().connected()) {
            let channel = self.channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| TransportError(format!("cannot enable publisher confirms: {e}")))?;
            *publisher = Some(channel);
        }
        let channel = publisher
            .as_ref()
            .ok_or_else(|| TransportError("no publisher channel".to_owned()))?;
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(event.id.to_string().into())
            .with_type(event.event_type.as_str().into())
            .with_headers(self.headers(event, &payload)?);
        let confirm = channel
            .basic_publish(
                self.exchange().as_str().into(),
                event.event_type.as_str().into(),
                // Unroutable events come back instead of vanishing.
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &payload,
                properties,
            )
            .await
            .map_err(|e| TransportError(format!("publish failed: {e}")))?
            .await
            .map_err(|e| TransportError(format!("no publisher confirm: {e}")))?;
        drop(publisher);
        if !confirm.is_ack() {
            return Err(TransportError(
                "the broker refused the event (nack)".to_owned(),
            ));
        }
        if confirm.take_message().is_none() {
            return Ok(());
        }
        // Returned: no queue is bound to the event's type.
        if self.redeclare_for(&event.event_type).await? {
            Err(TransportError(format!(
                "no queue took `{}` (a subscriber's queue was deleted); declared it again, the event \
                 is retried",
                event.event_type
            )))
        } else {
            tracing::debug!(event_type = %event.event_type, "no module subscribes to this event");
            Ok(())
        }
    }

    fn name(&self) -> &'static str {
        "rabbitmq"
    }
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

/// The header carrying the message's signature (`auth::EventSeal`).
const SIGNATURE: &str = "x-shop-signature";

impl RabbitMq {
    /// The headers of `event`'s message: its signature of `payload`, and
    /// its trace context.
    fn headers(&self, event: &Envelope, payload: &[u8]) -> Result<FieldTable, TransportError> {
        let mut headers = trace_headers(event);
        let signature = self
            .seal
            .sign(payload)
            .map_err(|e| TransportError(format!("cannot sign the event: {e}")))?;
        headers.insert(
            SIGNATURE.into(),
            AMQPValue::LongString(signature.as_str().into()),
        );
        Ok(headers)
    }

    /// Whether `delivery` carries this deployment's signature of its body.
    fn sealed(&self, delivery: &lapin::message::Delivery) -> bool {
        let signature = delivery.properties.headers().as_ref().and_then(|headers| {
            match headers.inner().get(SIGNATURE) {
                Some(AMQPValue::LongString(value)) => Some(value.to_string()),
                _ => None,
            }
        });
        signature.is_some_and(|signature| self.seal.verify(&delivery.data, &signature))
    }
}

/// The AMQP headers carrying `event`'s trace context (W3C names).
fn trace_headers(event: &Envelope) -> FieldTable {
    let mut headers = FieldTable::default();
    let pairs = [
        (telemetry::trace::TRACEPARENT, event.traceparent.as_deref()),
        (telemetry::trace::TRACESTATE, event.tracestate.as_deref()),
    ];
    for (name, value) in pairs {
        if let Some(value) = value {
            headers.insert(name.into(), AMQPValue::LongString(value.into()));
        }
    }
    headers
}
