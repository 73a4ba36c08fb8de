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

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;

use crate::{RabbitMqSettings, TransportError};

mod consume;
mod headers;
mod publish;

/// How long connecting, or opening a channel, may wait for the broker.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A connection to the broker, shared by the publisher and the consumers.
pub struct RabbitMq {
    settings: RabbitMqSettings,
    /// Signs what this process publishes and checks what it consumes.
    seal: auth::EventSeal,
    connection: Mutex<Option<Connection>>,
    /// The status of the connection in `connection`, readable without
    /// waiting for that lock, which a reconnect holds for as long as the
    /// broker takes to answer (readiness must not wait on it).
    status: std::sync::Mutex<Option<lapin::ConnectionStatus>>,
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
            status: std::sync::Mutex::default(),
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

    /// Whether the connection is up (readiness). Answers at once, even
    /// while a reconnect waits for the broker.
    pub fn is_connected(&self) -> bool {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(lapin::ConnectionStatus::connected)
    }

    /// A new channel, reconnecting first if the connection is gone. Each
    /// step gives up after [`CONNECT_TIMEOUT`]: a broker that accepts
    /// connections and answers nothing (or a host that drops packets)
    /// would otherwise hold every publisher and consumer behind this lock
    /// for the kernel's TCP timeout, minutes.
    async fn channel(&self) -> Result<Channel, TransportError> {
        let mut guard = self.connection.lock().await;
        let usable = guard.as_ref().is_some_and(|c| c.status().connected());
        if !usable {
            let connecting =
                Connection::connect(&self.settings.url, ConnectionProperties::default());
            let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
                .await
                .map_err(|_| {
                    TransportError("RabbitMQ did not answer the connection in time".to_owned())
                })?
                .map_err(|e| TransportError(format!("cannot connect to RabbitMQ: {e}")))?;
            *self
                .status
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(connection.status().clone());
            *guard = Some(connection);
        }
        let connection = guard
            .as_ref()
            .ok_or_else(|| TransportError("no RabbitMQ connection".to_owned()))?;
        tokio::time::timeout(CONNECT_TIMEOUT, connection.create_channel())
            .await
            .map_err(|_| TransportError("RabbitMQ did not open a channel in time".to_owned()))?
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
}
