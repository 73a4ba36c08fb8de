//! What each event says, to whom.

use catalog_api::events::{ProductCreated, ProductPriceChanged, ProductUpdated};
use inventory_api::events::{LowStock, OutOfStock};
use kernel::{Envelope, IntegrationEvent as _, Money};
use order_api::events::{OrderCancelled, OrderConfirmed, OrderFailed};
use user_api::events::{UserEmailChanged, UserRegistered};

/// A message to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Email {
    /// The account it is for (`None`: the admin channel).
    pub(crate) recipient: Option<uuid::Uuid>,
    /// Where it goes: an email address or a webhook's URL.
    pub(crate) to: String,
    pub(crate) subject: String,
    pub(crate) body: String,
}

fn money(m: Money) -> String {
    m.formatted()
}

/// Emails to the admin channel for an event, if any.
pub(crate) fn admin_email(event: &Envelope, admin: &str) -> Result<Option<Email>, String> {
    let (subject, body) = match event.event_type.as_str() {
        t if t == ProductCreated::TYPE => {
            let p: ProductCreated = event.payload()?;
            (
                format!("New product: {} ({})", p.name, p.sku),
                format!(
                    "A product was added to the catalog.\n\nSKU: {}\nName: {}\nPrice: {}\nFor sale: {}\nId: {}\n",
                    p.sku,
                    p.name,
                    money(p.price),
                    if p.active { "yes" } else { "no" },
                    p.product_id
                ),
            )
        }
        t if t == ProductUpdated::TYPE => {
            let p: ProductUpdated = event.payload()?;
            (
                format!("Product changed: {} ({})", p.name, p.sku),
                format!(
                    "A product was changed.\n\nSKU: {}\nName: {}\nPrice: {}\nFor sale: {}\nId: {}\n",
                    p.sku,
                    p.name,
                    money(p.price),
                    if p.active { "yes" } else { "no" },
                    p.product_id
                ),
            )
        }
        t if t == ProductPriceChanged::TYPE => {
            let p: ProductPriceChanged = event.payload()?;
            (
                format!("Price change: {} ({})", p.name, p.sku),
                format!(
                    "{} now costs {} (was {}).\n",
                    p.name,
                    money(p.new_price),
                    money(p.old_price)
                ),
            )
        }
        t if t == LowStock::TYPE => {
            let s: LowStock = event.payload()?;
            (
                format!("Low stock: {} ({} left)", s.sku, s.available),
                format!(
                    "{} is down to {} available (threshold {}). Time to reorder.\n",
                    s.sku, s.available, s.threshold
                ),
            )
        }
        t if t == OutOfStock::TYPE => {
            let s: OutOfStock = event.payload()?;
            (
                format!("Out of stock: {}", s.sku),
                format!("Nothing of {} is available any more.\n", s.sku),
            )
        }
        _ => return Ok(None),
    };
    Ok(Some(Email {
        recipient: None,
        to: admin.to_owned(),
        subject,
        body: footer(body, event),
    }))
}

/// Account emails for user events: always sent, they are not promotional.
pub(crate) fn account_emails(event: &Envelope) -> Result<Vec<Email>, String> {
    Ok(match event.event_type.as_str() {
        t if t == UserRegistered::TYPE => {
            let u: UserRegistered = event.payload()?;
            vec![Email {
                recipient: Some(u.user_id.as_uuid()),
                to: u.email,
                subject: "Welcome to the shop".to_owned(),
                body: footer(
                    format!(
                        "Hello {},\n\nyour account is ready. Sign in with this address.\n",
                        u.display_name
                    ),
                    event,
                ),
            }]
        }
        t if t == UserEmailChanged::TYPE => {
            let u: UserEmailChanged = event.payload()?;
            vec![Email {
                recipient: Some(u.user_id.as_uuid()),
                to: u.old_email,
                subject: "Your email address was changed".to_owned(),
                body: footer(
                    format!(
                        "The email address of your account is now {}.\nIf you did not do this, contact us at once.\n",
                        u.new_email
                    ),
                    event,
                ),
            }]
        }
        _ => Vec::new(),
    })
}

/// The price-drop email for users who opted into product news.
pub(crate) fn price_drop(
    change: &ProductPriceChanged,
    name: &str,
    email: &str,
    user: uuid::Uuid,
    event: &Envelope,
) -> Email {
    Email {
        recipient: Some(user),
        to: email.to_owned(),
        subject: format!("Price drop: {}", change.name),
        body: footer(
            format!(
                "Hello {name},\n\n{} now costs {} instead of {}.\n\nYou get this because you opted into product news; change that in your profile.\n",
                change.name,
                money(change.new_price),
                money(change.old_price)
            ),
            event,
        ),
    }
}

/// The customer an order event is about.
pub(crate) fn order_customer(event: &Envelope) -> Result<uuid::Uuid, String> {
    match event.event_type.as_str() {
        t if t == OrderConfirmed::TYPE => Ok(event.payload::<OrderConfirmed>()?.customer_id),
        t if t == OrderFailed::TYPE => Ok(event.payload::<OrderFailed>()?.customer_id),
        t if t == OrderCancelled::TYPE => Ok(event.payload::<OrderCancelled>()?.customer_id),
        other => Err(format!("`{other}` is not an order event")),
    }
}

/// The email telling a customer what became of their order.
pub(crate) fn order_update(
    event: &Envelope,
    customer: uuid::Uuid,
    name: &str,
    email: &str,
) -> Result<Email, String> {
    let (subject, text) = match event.event_type.as_str() {
        t if t == OrderConfirmed::TYPE => {
            let o: OrderConfirmed = event.payload()?;
            (
                format!("Order confirmed: {}", o.order_id),
                format!(
                    "Your order {} is confirmed: {} item(s), {} charged to your card.\n",
                    o.order_id,
                    o.items,
                    money(o.total)
                ),
            )
        }
        t if t == OrderFailed::TYPE => {
            let o: OrderFailed = event.payload()?;
            (
                format!("Order not completed: {}", o.order_id),
                format!(
                    "We could not complete your order {}: {}.\nNothing was charged; any hold on your card was released.\n",
                    o.order_id, o.reason
                ),
            )
        }
        t if t == OrderCancelled::TYPE => {
            let o: OrderCancelled = event.payload()?;
            (
                format!("Order cancelled: {}", o.order_id),
                format!(
                    "Your order {} was cancelled ({}).\nAny payment was voided or refunded.\n",
                    o.order_id, o.reason
                ),
            )
        }
        other => return Err(format!("`{other}` is not an order event")),
    };
    Ok(Email {
        recipient: Some(customer),
        to: email.to_owned(),
        subject,
        body: footer(
            format!(
                "Hello {name},\n\n{text}\nYou get this because order updates are on in your profile.\n"
            ),
            event,
        ),
    })
}

fn footer(mut body: String, event: &Envelope) -> String {
    body.push_str(&format!(
        "\n--\nevent {} ({})\n",
        event.id, event.event_type
    ));
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel::{CallContext, Currency};

    #[test]
    fn money_is_written_with_minor_units() {
        assert_eq!(money(Money::new(1299, Currency::EUR)), "12.99 EUR");
        assert_eq!(money(Money::new(5, Currency::EUR)), "0.05 EUR");
        // The yen has no minor unit, the Kuwaiti dinar three decimals.
        let yen = "JPY".parse::<Currency>().unwrap();
        assert_eq!(money(Money::new(1299, yen)), "1299 JPY");
        let dinar = "KWD".parse::<Currency>().unwrap();
        assert_eq!(money(Money::new(1299, dinar)), "1.299 KWD");
    }

    #[test]
    fn product_events_go_to_the_admin_channel_only() {
        let created = ProductCreated {
            product_id: catalog_api::ProductId::generate(),
            sku: catalog_api::Sku::parse("MUG-1").unwrap(),
            name: "Blue mug".into(),
            price: Money::new(1299, Currency::EUR),
            active: true,
        };
        let event = Envelope::new("catalog", &CallContext::background(), &created).unwrap();
        let email = admin_email(&event, "ops@example.com").unwrap().unwrap();
        assert_eq!(email.to, "ops@example.com");
        assert_eq!(email.subject, "New product: Blue mug (MUG-1)");
        assert!(email.body.contains("12.99 EUR"));
        assert!(account_emails(&event).unwrap().is_empty());
    }
}
