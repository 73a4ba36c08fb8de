//! The notification module: its event handler queues mail and webhook
//! calls, its sender delivers them (webhooks through a client that reaches
//! public addresses only).

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Data;
use futures_util::future::BoxFuture;

use super::{Context, Local, Registration};
use crate::Settings;
use crate::compose::Dependency;
use crate::modules::ModuleName;

pub(super) const REGISTRATION: Registration = Registration {
    module: ModuleName::Notification,
    migrations: notification::MODULE_MIGRATIONS,
    routes: notification::http::configure,
    database,
    gauges: None,
    build,
};

fn database(settings: &Settings) -> &db::ModuleDatabase {
    &settings.notification.database
}

fn build(cx: Context<'_>) -> BoxFuture<'_, anyhow::Result<Local>> {
    Box::pin(async move {
        let config = &cx.settings.notification;
        let subscription = events::Subscription {
            module: notification::NAME,
            name: notification::HANDLER,
            event_types: notification::EVENT_TYPES.to_vec(),
            handler: Arc::new(notification::NotificationHandler::new(
                config.admin_email.clone(),
            )),
            pool: cx.pool.clone(),
        };
        let egress = notification::egress::Egress::new(config.webhook_allow.clone());
        let sender = notification::Sender::new(
            cx.pool.clone(),
            config.clone(),
            webhook_client(cx.settings, &egress)?,
            cx.policies.get(Dependency::Smtp),
            cx.policies.get(Dependency::Webhooks),
        )?;
        let module = notification::http::NotificationModule::new(cx.pool, egress);
        Ok(Local::new(Data::new(module))
            .subscription(subscription)
            .job(tokio::spawn(sender.run(cx.stopped.clone()))))
    })
}

/// The HTTP client of webhook calls: it reaches public addresses only (its
/// resolver refuses internal ones, `notification::egress`), follows no
/// redirect and uses no proxy.
///
/// # Errors
/// When the client cannot be built (not expected).
fn webhook_client(
    settings: &Settings,
    egress: &notification::egress::Egress,
) -> anyhow::Result<reqwest::Client> {
    Ok(crate::startup::client_builder(settings)?
        .dns_resolver(Arc::new(egress.clone()).resolver())
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_millis(settings.remote.timeout_ms))
        .connect_timeout(Duration::from_millis(settings.remote.timeout_ms.min(5000)))
        .build()?)
}
