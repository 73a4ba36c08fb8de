//! Integration events between modules.
//!
//! - A module publishes only through [`outbox::publish`], inside the
//!   transaction of the state change, into its own schema's `outbox`.
//! - A [`Relay`] per local module delivers outbox rows in order (one relay
//!   at a time per schema, by advisory lock), woken in process by
//!   [`outbox::publish`] (and by a `NOTIFY shop_outbox_<schema>`, which
//!   writers no longer send, heard by one [`listen`] connection per
//!   database), polling otherwise; it marks them delivered and
//!   prunes old ones.
//! - The [`Transport`] is in-process (the relay hands events straight to the
//!   [`Dispatcher`]) or RabbitMQ (a topic exchange, one durable queue per
//!   subscribing module, publisher confirms, acks after the handler commits).
//! - The [`Dispatcher`] runs each [`Subscription`]'s handler in its module's
//!   transaction together with an `inbox` row, so a redelivered event is
//!   skipped; failures are retried with exponential backoff and full jitter,
//!   then written to the module's `dead_letters`, from where an admin can
//!   redrive them.

mod dispatch;
mod gauges;
pub mod http;
pub mod outbox;
pub mod rabbitmq;
mod relay;
mod settings;
mod tables;

pub use dispatch::{DeadLetter, Dispatcher, EventHandler, HandlerError, Subscription, one_by_one};
pub use gauges::record_metrics;
pub use relay::{Relay, listen};
pub use settings::{EventsSettings, RabbitMqSettings, TransportKind};

use kernel::Envelope;
use tracing::Instrument as _;

/// Hands an event on towards its handlers. `Ok` means durably handed over:
/// handled (or dead-lettered) in process, or confirmed by the broker.
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    /// Delivers one event.
    ///
    /// # Errors
    /// The event was not handed over; the relay retries it later.
    async fn publish(&self, event: &Envelope) -> Result<(), TransportError>;

    /// Delivers `events` in order, each with its producer span; by default
    /// one [`publish`](Self::publish) each, inside its span.
    ///
    /// # Errors
    /// The index of the first event not handed over, and why; every event
    /// before it was.
    async fn publish_batch(
        &self,
        events: &[(Envelope, tracing::Span)],
    ) -> Result<(), (usize, TransportError)> {
        for (index, (event, span)) in events.iter().enumerate() {
            self.publish(event)
                .instrument(span.clone())
                .await
                .map_err(|e| (index, e))?;
        }
        Ok(())
    }

    /// `transport` label of metrics.
    fn name(&self) -> &'static str;
}

/// An event could not be handed over.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

/// The in-process transport: the relay runs the handlers itself.
pub struct InProcess(pub std::sync::Arc<Dispatcher>);

#[async_trait::async_trait]
impl Transport for InProcess {
    async fn publish(&self, event: &Envelope) -> Result<(), TransportError> {
        self.0
            .dispatch(event, None)
            .await
            .map_err(|e| TransportError(e.to_string()))
    }

    /// The whole batch, one transaction per subscription
    /// ([`Dispatcher::dispatch_batch`]). A failure is reported on the first
    /// event some subscription could not take: the relay marks the ones
    /// before it delivered, records the error on it, and offers it and the
    /// rest again (the inbox skips those already handled).
    async fn publish_batch(
        &self,
        events: &[(Envelope, tracing::Span)],
    ) -> Result<(), (usize, TransportError)> {
        let events: Vec<&Envelope> = events.iter().map(|(event, _)| event).collect();
        self.0
            .dispatch_batch(&events)
            .await
            .map_err(|(index, e)| (index, TransportError(e.to_string())))
    }

    fn name(&self) -> &'static str {
        "in-process"
    }
}
