//! The payment module: card payments through the provider at
//! `payment.provider_url`, or through the sandbox provider started in this
//! process when that is unset (development; it moves no money).

use std::sync::Arc;

use actix_web::web::Data;
use futures_util::future::BoxFuture;
use url::Url;

use super::{Apis, Context, Local, Registration};
use crate::Settings;
use crate::compose::Dependency;
use crate::modules::ModuleName;

pub(super) const REGISTRATION: Registration = Registration {
    module: ModuleName::Payment,
    migrations: payment::MODULE_MIGRATIONS,
    routes: payment::http::configure,
    database,
    gauges: None,
    build,
};

fn database(settings: &Settings) -> &db::ModuleDatabase {
    &settings.payment.database
}

fn build(cx: Context<'_>) -> BoxFuture<'_, anyhow::Result<Local>> {
    Box::pin(async move {
        let mut jobs = Vec::new();
        let provider_url = match &cx.settings.payment.provider_url {
            Some(url) => url.clone(),
            #[cfg(feature = "sandbox")]
            None if cx.settings.payment.sandbox_embedded => {
                let (server, port) = payment_sandbox::server("127.0.0.1", 0, 1)?;
                tracing::info!(
                    port,
                    "started the SANDBOX payment provider in this process (payment.provider_url is unset); it moves no money"
                );
                let handle = server.handle();
                tokio::spawn(server);
                let mut stop = cx.stopped.clone();
                jobs.push(tokio::spawn(async move {
                    let _ = stop.changed().await;
                    handle.stop(true).await;
                }));
                Url::parse(&format!("http://127.0.0.1:{port}/"))?
            }
            None => anyhow::bail!(
                "payment.provider_url: required (payment.sandbox_embedded is off, \
                 or this binary lacks the sandbox: cargo feature \"sandbox\")"
            ),
        };
        let provider = payment::provider::HttpProvider::new(
            cx.client.clone(),
            provider_url,
            cx.policies.get(Dependency::PaymentProvider),
        );
        let module = Data::new(payment::PaymentModule::new(cx.pool, Arc::new(provider)));
        let api: Arc<dyn payment_api::PaymentApi> = module.clone().into_inner();
        let mut local = Local::new(module).apis(Apis {
            payment: Some(api),
            ..Apis::default()
        });
        local.jobs = jobs;
        Ok(local)
    })
}
