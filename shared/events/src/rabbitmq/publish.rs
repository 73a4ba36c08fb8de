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
        let published = async {
            channel
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
                .map_err(|e| TransportError(format!("no publisher confirm: {e}")))
        };
        let confirm = published.await?;
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
}
