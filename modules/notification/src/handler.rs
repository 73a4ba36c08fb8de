//! The event handler: keeps the recipients read model and queues messages.

use catalog_api::events::ProductPriceChanged;
use diesel::sql_types::{Bool, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use events::{EventHandler, HandlerError};
use kernel::{Envelope, IntegrationEvent as _};
use order_api::events::{OrderCancelled, OrderConfirmed, OrderFailed};
use user_api::events::{UserEmailChanged, UserPreferencesChanged, UserRegistered};
use uuid::Uuid;

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
                let p = u.notification_preferences;
                db::sql(
                    "INSERT INTO recipients (user_id, email, display_name, order_updates, product_news, marketing) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id) DO UPDATE SET email = EXCLUDED.email, \
                     display_name = EXCLUDED.display_name, updated_at = now()",
                )
                .bind::<SqlUuid, _>(u.user_id.as_uuid())
                .bind::<Text, _>(&u.email)
                .bind::<Text, _>(&u.display_name)
                .bind::<Bool, _>(p.order_updates)
                .bind::<Bool, _>(p.product_news)
                .bind::<Bool, _>(p.marketing)
                .execute(conn)
                .await?;
            }
            t if t == UserEmailChanged::TYPE => {
                let u: UserEmailChanged = payload(event)?;
                db::sql("UPDATE recipients SET email = $2, updated_at = now() WHERE user_id = $1")
                    .bind::<SqlUuid, _>(u.user_id.as_uuid())
                    .bind::<Text, _>(&u.new_email)
                    .execute(conn)
                    .await?;
            }
            t if t == UserPreferencesChanged::TYPE => {
                let u: UserPreferencesChanged = payload(event)?;
                let p = u.notification_preferences;
                db::sql(
                    "UPDATE recipients SET order_updates = $2, product_news = $3, marketing = $4, updated_at = now() \
                     WHERE user_id = $1",
                )
                .bind::<SqlUuid, _>(u.user_id.as_uuid())
                .bind::<Bool, _>(p.order_updates)
                .bind::<Bool, _>(p.product_news)
                .bind::<Bool, _>(p.marketing)
                .execute(conn)
                .await?;
            }
            t if t == ProductPriceChanged::TYPE => {
                let change: ProductPriceChanged = payload(event)?;
                let dropped = change.new_price.currency() == change.old_price.currency()
                    && change.new_price.amount_minor() < change.old_price.amount_minor();
                if dropped {
                    // Only users who opted into product news hear of it.
                    #[derive(diesel::QueryableByName)]
                    struct Recipient {
                        #[diesel(sql_type = SqlUuid)]
                        user_id: Uuid,
                        #[diesel(sql_type = Text)]
                        email: String,
                        #[diesel(sql_type = Text)]
                        display_name: String,
                    }
                    let opted_in: Vec<Recipient> = db::sql(
                        "SELECT user_id, email, display_name FROM recipients WHERE product_news",
                    )
                    .load(conn)
                    .await?;
                    for r in opted_in {
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
                #[derive(diesel::QueryableByName)]
                struct Recipient {
                    #[diesel(sql_type = Text)]
                    email: String,
                    #[diesel(sql_type = Text)]
                    display_name: String,
                }
                let found: Vec<Recipient> = db::sql(
                    "SELECT email, display_name FROM recipients WHERE user_id = $1 AND order_updates",
                )
                .bind::<SqlUuid, _>(customer)
                .load(conn)
                .await?;
                for r in found {
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

const INSERT: &str = "INSERT INTO notifications \
    (id, event_id, event_type, request_id, recipient_user_id, channel, destination, subscription_id, subject, body) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT ON CONSTRAINT notifications_once DO NOTHING";

async fn queue_email(
    conn: &mut AsyncPgConnection,
    event: &Envelope,
    email: &Email,
) -> Result<(), HandlerError> {
    db::sql(INSERT)
        .bind::<SqlUuid, _>(Uuid::now_v7())
        .bind::<SqlUuid, _>(event.id)
        .bind::<Text, _>(&event.event_type)
        .bind::<Nullable<Text>, _>(event.request_id.as_deref())
        .bind::<Nullable<SqlUuid>, _>(email.recipient)
        .bind::<Text, _>("email")
        .bind::<Text, _>(&email.to)
        .bind::<Nullable<SqlUuid>, _>(None::<Uuid>)
        .bind::<Text, _>(&email.subject)
        .bind::<Text, _>(&email.body)
        .execute(conn)
        .await?;
    Ok(())
}

/// One webhook call per subscription to this event type; the body is the envelope.
async fn queue_webhooks(
    conn: &mut AsyncPgConnection,
    event: &Envelope,
) -> Result<(), HandlerError> {
    #[derive(diesel::QueryableByName)]
    struct Subscription {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
        #[diesel(sql_type = Text)]
        url: String,
    }
    let subscriptions: Vec<Subscription> =
        db::sql("SELECT id, url FROM webhook_subscriptions WHERE $1 = ANY (event_types)")
            .bind::<Text, _>(&event.event_type)
            .load(conn)
            .await?;
    if subscriptions.is_empty() {
        return Ok(());
    }
    let body = serde_json::to_string(event).map_err(|e| HandlerError(e.to_string()))?;
    for s in subscriptions {
        db::sql(INSERT)
            .bind::<SqlUuid, _>(Uuid::now_v7())
            .bind::<SqlUuid, _>(event.id)
            .bind::<Text, _>(&event.event_type)
            .bind::<Nullable<Text>, _>(event.request_id.as_deref())
            .bind::<Nullable<SqlUuid>, _>(None::<Uuid>)
            .bind::<Text, _>("webhook")
            .bind::<Text, _>(&s.url)
            .bind::<Nullable<SqlUuid>, _>(Some(s.id))
            .bind::<Text, _>(&event.event_type)
            .bind::<Text, _>(&body)
            .execute(conn)
            .await?;
    }
    Ok(())
}
