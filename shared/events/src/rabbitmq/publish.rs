//! Publishing: the [`Transport`] side of [`RabbitMq`], with publisher
//! confirms, and unroutable events returned so a lost queue is declared again.

use kernel::Envelope;
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};

use super::RabbitMq;
use crate::{Transport, TransportError};

/// How long a publish may take, the channel's opening and the broker's
/// confirm included.
const PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[async_trait::async_trait]
impl Transport for RabbitMq {
    /// Publishes `event`, confirmed, within [`PUBLISH_TIMEOUT`]. A broker
    /// under a resource alarm stops reading publishers without closing
    /// them: the relay (holding its batch's transaction open) must not
    /// wait for ever. Unconfirmed, the event is sent again later (a copy
    /// the broker took after all is a duplicate the inbox skips), on a
    /// channel of its own.
    async fn publish(&self, event: &Envelope) -> Result<(), TransportError> {
        match tokio::time::timeout(PUBLISH_TIMEOUT, self.publish_now(event)).await {
            Ok(published) => published,
            Err(_) => {
                if let Ok(mut publisher) = self.publisher.try_lock() {
                    *publisher = None;
                }
                Err(TransportError(format!(
                    "the broker confirmed no publish in {} s (blocked by a resource alarm?)",
                    PUBLISH_TIMEOUT.as_secs()
                )))
            }
        }
    }

    fn name(&self) -> &'static str {
        "rabbitmq"
    }
}

impl RabbitMq {
    async fn publish_now(&self, event: &Envelope) -> Result<(), TransportError> {
        let payload = serde_json::to_vec(event).map_err(|e| TransportError(e.to_string()))?;
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(event.id.to_string().into())
            .with_type(event.event_type.as_str().into())
            // When the broker was handed it: how long it has waited in a
            // queue, whatever its event's age (`consume::unknown_type`).
            .with_timestamp(u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default())
            .with_headers(self.headers(event, &payload)?);
        let exchange = self.exchange();
        if self
            .publish_confirmed(&exchange, &event.event_type, &payload, properties)
            .await?
        {
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

    /// Publishes `payload` to `exchange` under `routing_key` on the
    /// publisher channel (opened, with confirms, when there is none), and
    /// waits for the broker's confirm: whether some queue took it (`false`:
    /// returned unroutable).
    ///
    /// # Errors
    /// No channel, no confirm, or the broker refused it.
    pub(super) async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<bool, TransportError> {
        let mut publisher = self.publisher.lock().await;
        if publisher.as_ref().is_none_or(|c| !c.status().connected()) {
            let channel = self.channel().await?;
            // A publish to an exchange that is gone (deleted by hand, or the
            // broker's definitions reset) closes the channel: declared again
            // on the next, or every publish would fail until a restart. The
            // queues' bindings went with it; a publish they miss comes back
            // unroutable and declares them (`redeclare_for`).
            self.declare_exchanges(&channel).await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| TransportError(format!("cannot enable publisher confirms: {e}")))?;
            *publisher = Some(channel);
        }
        let channel = publisher
            .as_ref()
            .ok_or_else(|| TransportError("no publisher channel".to_owned()))?;
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                // Unroutable messages come back instead of vanishing.
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                payload,
                properties,
            )
            .await
            .map_err(|e| TransportError(format!("publish failed: {e}")))?
            .await
            .map_err(|e| TransportError(format!("no publisher confirm: {e}")))?;
        drop(publisher);
        if !confirm.is_ack() {
            return Err(TransportError(
                "the broker refused the message (nack)".to_owned(),
            ));
        }
        Ok(confirm.take_message().is_none())
    }

    /// Puts a copy of `delivery` at the back of `queue` (the default
    /// exchange routes by queue name), confirmed, within
    /// [`PUBLISH_TIMEOUT`]: whether the queue took it.
    ///
    /// # Errors
    /// As [`Self::publish_confirmed`], or no confirm in time.
    pub(super) async fn to_the_back(
        &self,
        queue: &str,
        delivery: &lapin::message::Delivery,
    ) -> Result<bool, TransportError> {
        let copied = self.publish_confirmed("", queue, &delivery.data, delivery.properties.clone());
        tokio::time::timeout(PUBLISH_TIMEOUT, copied)
            .await
            .map_err(|_| TransportError("the broker confirmed no publish in time".to_owned()))?
    }
}
