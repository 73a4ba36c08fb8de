//! The notification module as the process hosting it sees it: its event
//! handler queues mail and webhook calls, its sender delivers them
//! (webhooks through a client that reaches public addresses only).

use std::sync::Arc;

use actix_web::web::Data;
use futures_util::future::BoxFuture;
use host::compose::{self, Dependency};
use host::registry::{Context, Local, Registration};
use host::{ModuleName, Section};

use crate::egress::Egress;
use crate::{EmailTransport, NotificationHandler, Sender, Settings, SmtpTls};

/// The notification module, for the composition root.
pub const REGISTRATION: Registration = Registration::new::<Settings>(
    ModuleName::Notification,
    crate::MODULE_MIGRATIONS,
    crate::http::configure,
    build,
)
.tags(&[(
    "notifications",
    "Messages sent on events: email and signed webhooks",
)])
.list_keys(&["webhook_allow"]);

impl Section for Settings {
    fn validate(&self, environment: &str) -> Result<(), (String, String)> {
        // Read at every send: a bad address would fail each message after
        // its last attempt, not the start.
        for (key, value) in [("from", &self.from), ("admin_email", &self.admin_email)] {
            if let Err(e) = value.parse::<lettre::message::Mailbox>() {
                return Err((key.into(), format!("not an email address ({e}): {value:?}")));
            }
        }
        if self.max_webhooks == 0 {
            return Err(("max_webhooks".into(), "must be at least 1".into()));
        }
        // 0 would prune an order update held for a customer whose
        // registration has not arrived yet, at the next prune.
        if self.retention_days == 0 {
            return Err(("retention_days".into(), "must be at least 1".into()));
        }
        if environment == "production"
            && self.email.transport == EmailTransport::Smtp
            && self.email.smtp_tls == SmtpTls::None
        {
            return Err((
                "email.smtp_tls".into(),
                "must be starttls or tls in production: email would cross the network in clear"
                    .into(),
            ));
        }
        Ok(())
    }
}

fn build(cx: Context<'_>) -> BoxFuture<'_, anyhow::Result<Local>> {
    Box::pin(async move {
        let config = cx.section::<Settings>()?;
        let subscription = events::Subscription {
            module: crate::NAME,
            name: crate::HANDLER,
            event_types: crate::EVENT_TYPES.to_vec(),
            handler: Arc::new(NotificationHandler::new(config.admin_email.clone())),
            pool: cx.pool.clone(),
        };
        let egress = Egress::new(config.webhook_allow.clone());
        let sender = Sender::new(
            cx.pool.clone(),
            config.clone(),
            webhook_client(cx.settings, &egress)?,
            cx.policy(Dependency::Smtp),
            cx.policy(Dependency::Webhooks),
        )?;
        let module =
            crate::http::NotificationModule::new(cx.pool.clone(), egress, config.max_webhooks);
        Ok(Local::new(Data::new(module))
            .subscription(subscription)
            .job(tokio::spawn(sender.run(cx.stopped.clone()))))
    })
}

/// The HTTP client of webhook calls: it reaches public addresses only (its
/// resolver refuses internal ones, [`crate::egress`]), follows no redirect
/// and uses no proxy.
///
/// # Errors
/// When the client cannot be built (not expected).
fn webhook_client(settings: &host::Settings, egress: &Egress) -> anyhow::Result<reqwest::Client> {
    Ok(compose::client_builder(settings)?
        .dns_resolver(Arc::new(egress.clone()).resolver())
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()?)
}
