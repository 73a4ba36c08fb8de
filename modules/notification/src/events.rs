//! The event handler: keeps the recipients read model and queues messages.

use catalog_api::events::ProductPriceChanged;
use diesel_async::AsyncPgConnection;
use events::{EventHandler, HandlerError};
use kernel::{Envelope, IntegrationEvent as _};
use order_api::events::{OrderCancelled, OrderConfirmed, OrderFailed};
use user_api::events::{UserEmailChanged, UserPreferencesChanged, UserRegistered};

use crate::repo;
use crate::templates::{self, Email};

/// Handles every event in [`crate::EVENT_TYPES`].
#[derive(Debug, Clone)]
pub struct NotificationHandler {
    admin_email: String,
}

impl NotificationHandler {
    /// A handler sending admin notifications to `admin_email`.
    pub fn new(admin_email: String) -> NotificationHandler {
        NotificationHandler { admin_email }
    }
}

fn payload<E: kernel::IntegrationEvent>(event: &Envelope) -> Result<E, HandlerError> {
    event.payload().map_err(HandlerError)
}

#[async_trait::async_trait]
impl EventHandler for NotificationHandler {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &Envelope,
    ) -> Result<(), HandlerError> {
        let mut emails = Vec::new();
        match event.event_type.as_str() {
            t if t == UserRegistered::TYPE => {
                let u: UserRegistered = payload(event)?;
                repo::upsert_recipient(
                    conn,
                    u.user_id.as_uuid(),
                    &u.email,
                    &u.display_name,
                    u.notification_preferences,
                )
                .await?;
            }
            t if t == UserEmailChanged::TYPE => {
                let u: UserEmailChanged = payload(event)?;
                repo::set_recipient_email(conn, u.user_id.as_uuid(), &u.new_email).await?;
            }
            t if t == UserPreferencesChanged::TYPE => {
                let u: UserPreferencesChanged = payload(event)?;
                repo::set_recipient_preferences(
                    conn,
                    u.user_id.as_uuid(),
                    u.notification_preferences,
                )
                .await?;
            }
            t if t == ProductPriceChanged::TYPE => {
                let change: ProductPriceChanged = payload(event)?;
                let dropped = change.new_price.currency() == change.old_price.currency()
                    && change.new_price.amount_minor() < change.old_price.amount_minor();
                if dropped {
                    // Only users who opted into product news hear of it.
                    for r in repo::product_news_recipients(conn).await? {
                        emails.push(templates::price_drop(
                            &change,
                            &r.display_name,
                            &r.email,
                            r.user_id,
                            event,
                        ));
                    }
                }
            }
            t if t == OrderConfirmed::TYPE
                || t == OrderFailed::TYPE
                || t == OrderCancelled::TYPE =>
            {
                let customer = templates::order_customer(event).map_err(HandlerError)?;
                // The customer, if they kept order updates on.
                for r in repo::order_update_recipient(conn, customer).await? {
                    emails.push(
                        templates::order_update(event, customer, &r.display_name, &r.email)
                            .map_err(HandlerError)?,
                    );
                }
            }
            _ => {}
        }
        if let Some(email) =
            templates::admin_email(event, &self.admin_email).map_err(HandlerError)?
        {
            emails.push(email);
        }
        emails.extend(templates::account_emails(event).map_err(HandlerError)?);
        for email in &emails {
            queue_email(conn, event, email).await?;
        }
        queue_webhooks(conn, event).await?;
        Ok(())
    }
}

async fn queue_email(
    conn: &mut AsyncPgConnection,
    event: &Envelope,
    email: &Email,
) -> Result<(), HandlerError> {
    repo::queue(
        conn,
        &repo::Queued {
            event,
            recipient: email.recipient,
            channel: "email",
            destination: &email.to,
            subscription: None,
            subject: &email.subject,
            body: &email.body,
        },
    )
    .await?;
    Ok(())
}

/// One webhook call per subscription to this event type; the body is the envelope.
async fn queue_webhooks(
    conn: &mut AsyncPgConnection,
    event: &Envelope,
) -> Result<(), HandlerError> {
    let subscriptions = repo::subscriptions_to(conn, &event.event_type).await?;
    if subscriptions.is_empty() {
        return Ok(());
    }
    let body = serde_json::to_string(event).map_err(|e| HandlerError(e.to_string()))?;
    for s in subscriptions {
        repo::queue(
            conn,
            &repo::Queued {
                event,
                recipient: None,
                channel: "webhook",
                destination: &s.url,
                subscription: Some(s.id),
                subject: &event.event_type,
                body: &body,
            },
        )
        .await?;
    }
    Ok(())
}
