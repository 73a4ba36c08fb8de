//! The event handler: keeps the recipients read model and queues messages.

use std::collections::HashMap;

use catalog_api::events::ProductPriceChanged;
use diesel_async::AsyncPgConnection;
use events::{EventHandler, HandlerError};
use kernel::{Envelope, IntegrationEvent as _};
use order_api::events::{OrderCancelled, OrderConfirmed, OrderFailed};
use user_api::events::{
    UserDisplayNameChanged, UserEmailChanged, UserPreferencesChanged, UserRegistered,
    UserStatusChanged,
};
use uuid::Uuid;

use crate::repo;
use crate::templates::{self, Email};

/// Recipients of one event read, and their messages queued, at a time.
const FAN_OUT_PAGE: usize = 1_000;

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
    event.payload().map_err(HandlerError::new)
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
                repo::register_recipient(
                    conn,
                    u.user_id.as_uuid(),
                    &u.email,
                    &u.display_name,
                    u.notification_preferences,
                    u.version,
                )
                .await?;
                release_held(conn, u.user_id.as_uuid()).await?;
            }
            t if t == UserEmailChanged::TYPE => {
                let u: UserEmailChanged = payload(event)?;
                repo::set_recipient_email(conn, u.user_id.as_uuid(), &u.new_email, u.version)
                    .await?;
            }
            t if t == UserPreferencesChanged::TYPE => {
                let u: UserPreferencesChanged = payload(event)?;
                repo::set_recipient_preferences(
                    conn,
                    u.user_id.as_uuid(),
                    u.notification_preferences,
                    u.version,
                )
                .await?;
            }
            t if t == UserDisplayNameChanged::TYPE => {
                let u: UserDisplayNameChanged = payload(event)?;
                repo::set_recipient_name(conn, u.user_id.as_uuid(), &u.display_name, u.version)
                    .await?;
            }
            t if t == UserStatusChanged::TYPE => {
                let u: UserStatusChanged = payload(event)?;
                let active = u.status == user_api::UserStatus::Active;
                repo::set_recipient_active(conn, u.user_id.as_uuid(), active, u.version).await?;
            }
            t if t == ProductPriceChanged::TYPE => {
                let change: ProductPriceChanged = payload(event)?;
                // A product not for sale is news to nobody (a draft priced
                // before it goes on sale, or one taken off sale and repriced
                // in one change).
                let dropped = change.active
                    && change.new_price.currency() == change.old_price.currency()
                    && change.new_price.amount_minor() < change.old_price.amount_minor();
                if dropped {
                    // Only users who opted into product news hear of it:
                    // a page of them at a time (all of them in this
                    // transaction), so neither the messages held in memory
                    // nor any one statement grows with the audience.
                    let mut after = None;
                    loop {
                        let page = repo::product_news_recipients(conn, after, FAN_OUT_PAGE).await?;
                        let emails: Vec<Email> = page
                            .iter()
                            .map(|r| {
                                templates::price_drop(
                                    &change,
                                    &r.display_name,
                                    &r.email,
                                    r.user_id,
                                    event,
                                )
                            })
                            .collect();
                        let mut queued = Vec::new();
                        queue_for(&mut queued, event, &emails, &[], "");
                        repo::queue(conn, &queued).await?;
                        match page.last() {
                            Some(last) if page.len() == FAN_OUT_PAGE => after = Some(last.user_id),
                            _ => break,
                        }
                    }
                }
            }
            t if is_order_update(t) => {
                let customer = templates::order_customer(event).map_err(HandlerError::new)?;
                if repo::unregistered(conn, &[customer]).await?.is_empty() {
                    // The customer, if they kept order updates on.
                    for r in repo::order_update_recipients(conn, &[customer]).await? {
                        emails.push(
                            templates::order_update(event, customer, &r.display_name, &r.email)
                                .map_err(HandlerError::new)?,
                        );
                    }
                } else {
                    emails.push(held(event, customer)?);
                }
            }
            _ => {}
        }
        emails.extend(self.fixed_emails(event)?);
        let subscriptions = repo::subscriptions_to(conn, &event.event_type).await?;
        let body = webhook_body(event, &subscriptions)?;
        let mut queued = Vec::new();
        queue_for(&mut queued, event, &emails, &subscriptions, &body);
        repo::queue(conn, &queued).await?;
        Ok(())
    }

    /// A batch of order updates (the order module's relay batch, under
    /// checkout load) with one query for the recipients, one per event type
    /// for the webhook subscriptions and one INSERT for every message: the
    /// same messages, in the same order, as one by one. Any other batch goes
    /// one by one.
    async fn handle_batch(
        &self,
        conn: &mut AsyncPgConnection,
        events: &[&Envelope],
    ) -> Result<(), HandlerError> {
        if events.len() < 2 || !events.iter().all(|e| is_order_update(&e.event_type)) {
            // The customers of the registrations first, in id order, as an
            // order batch takes them (`repo::unregistered`): one by one, in
            // the batch's order, two such batches could wait for each other.
            let registering: Vec<Uuid> = events
                .iter()
                .filter(|e| e.event_type == UserRegistered::TYPE)
                .filter_map(|e| e.payload::<UserRegistered>().ok())
                .map(|u| u.user_id.as_uuid())
                .collect();
            repo::lock_recipients(conn, &registering).await?;
            return ::events::one_by_one(self, conn, events).await;
        }
        let customers = events
            .iter()
            .map(|event| templates::order_customer(event))
            .collect::<Result<Vec<Uuid>, String>>()
            .map_err(HandlerError::new)?;
        let mut wanted = customers.clone();
        wanted.sort_unstable();
        wanted.dedup();
        // Under the customers' locks (taken by `unregistered`) before the
        // recipients are read: a registration handled meanwhile is either
        // seen here or sees what this batch holds.
        let unregistered = repo::unregistered(conn, &wanted).await?;
        let recipients: HashMap<Uuid, repo::Recipient> =
            repo::order_update_recipients(conn, &wanted)
                .await?
                .into_iter()
                .map(|r| (r.user_id, r))
                .collect();
        let mut subscriptions: HashMap<&str, Vec<repo::Subscription>> = HashMap::new();
        for event in events {
            let t = event.event_type.as_str();
            if !subscriptions.contains_key(t) {
                subscriptions.insert(t, repo::subscriptions_to(conn, t).await?);
            }
        }
        let mut messages = Vec::with_capacity(events.len());
        for (event, customer) in events.iter().zip(&customers) {
            let mut emails = Vec::new();
            if unregistered.contains(customer) {
                emails.push(held(event, *customer)?);
            } else if let Some(r) = recipients.get(customer) {
                emails.push(
                    templates::order_update(event, *customer, &r.display_name, &r.email)
                        .map_err(HandlerError::new)?,
                );
            }
            emails.extend(self.fixed_emails(event)?);
            let subs = subscriptions
                .get(event.event_type.as_str())
                .map_or(&[][..], Vec::as_slice);
            messages.push((emails, subs, webhook_body(event, subs)?));
        }
        let mut queued = Vec::new();
        for (event, (emails, subs, body)) in events.iter().zip(&messages) {
            queue_for(&mut queued, event, emails, subs, body);
        }
        repo::queue(conn, &queued).await?;
        Ok(())
    }
}

impl NotificationHandler {
    /// The emails `event` causes whoever is subscribed: to the admin, and
    /// to the account it is about.
    fn fixed_emails(&self, event: &Envelope) -> Result<Vec<Email>, HandlerError> {
        let mut emails = Vec::new();
        if let Some(email) =
            templates::admin_email(event, &self.admin_email).map_err(HandlerError::new)?
        {
            emails.push(email);
        }
        emails.extend(templates::account_emails(event).map_err(HandlerError::new)?);
        Ok(emails)
    }
}

/// An order update held for `customer`, whose registration has not
/// reached this module yet (the user module's events may lag behind the
/// order module's when they run apart): an email with no address yet,
/// which [`repo::queue`] stores `held` with the event as its body, written
/// out when the registration arrives ([`release_held`]), never dropped for
/// want of an address.
fn held(event: &Envelope, customer: Uuid) -> Result<Email, HandlerError> {
    let envelope = serde_json::to_string(event).map_err(|e| HandlerError::new(e.to_string()))?;
    tracing::info!(
        event.id = %event.id,
        "order update held until the customer's registration arrives"
    );
    Ok(Email {
        recipient: Some(customer),
        to: String::new(),
        subject: event.event_type.clone(),
        body: envelope,
    })
}

/// Writes out the order updates held for `customer`, now registered, if
/// they kept order updates on; drops them otherwise. A held row that cannot
/// be read or written out fails alone (its error recorded), never the
/// registration. Also run by the sender's upkeep for registrations handled
/// by an instance from before held messages ([`crate::worker`]).
pub(crate) async fn release_held(
    conn: &mut AsyncPgConnection,
    customer: Uuid,
) -> Result<(), HandlerError> {
    repo::lock_recipients(conn, &[customer]).await?;
    let held = repo::held_for(conn, customer).await?;
    if held.is_empty() {
        return Ok(());
    }
    let Some(r) = repo::order_update_recipients(conn, &[customer])
        .await?
        .into_iter()
        .next()
    else {
        repo::drop_held(conn, customer).await?;
        return Ok(());
    };
    for (id, body) in held {
        let email = serde_json::from_str::<Envelope>(&body)
            .map_err(|e| e.to_string())
            .and_then(|event| templates::order_update(&event, customer, &r.display_name, &r.email));
        match email {
            Ok(email) => {
                repo::write_out(conn, id, &email.to, &email.subject, &email.body).await?;
            }
            Err(e) => {
                tracing::error!(notification.id = %id, error = %e, "a held order update cannot be written out");
                repo::fail_held(conn, id, &format!("cannot be written out: {e}")).await?;
            }
        }
    }
    Ok(())
}

/// An order's confirmation, failure or cancellation: its customer hears of it.
fn is_order_update(event_type: &str) -> bool {
    event_type == OrderConfirmed::TYPE
        || event_type == OrderFailed::TYPE
        || event_type == OrderCancelled::TYPE
}

/// What a webhook call carries (the envelope), when anyone subscribed.
fn webhook_body(
    event: &Envelope,
    subscriptions: &[repo::Subscription],
) -> Result<String, HandlerError> {
    if subscriptions.is_empty() {
        return Ok(String::new());
    }
    serde_json::to_string(event).map_err(|e| HandlerError::new(e.to_string()))
}

/// The messages of `event`: its emails, then one webhook call per
/// subscription to its type (the body is the envelope).
fn queue_for<'a>(
    queued: &mut Vec<repo::Queued<'a>>,
    event: &'a Envelope,
    emails: &'a [Email],
    subscriptions: &'a [repo::Subscription],
    body: &'a str,
) {
    for email in emails {
        queued.push(repo::Queued {
            event,
            recipient: email.recipient,
            channel: "email",
            destination: &email.to,
            subscription: None,
            subject: &email.subject,
            body: &email.body,
        });
    }
    for s in subscriptions {
        queued.push(repo::Queued {
            event,
            recipient: None,
            channel: "webhook",
            destination: &s.url,
            subscription: Some(s.id),
            subject: &event.event_type,
            body,
        });
    }
}
