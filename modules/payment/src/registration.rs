//! The payment module as the process hosting it sees it: card payments
//! through the provider at `payment.provider_url`, or through the sandbox
//! provider started in this process when that is unset (development; it
//! moves no money).

use std::sync::Arc;

use actix_web::web::Data;
use futures_util::future::BoxFuture;
use host::compose::Dependency;
use host::registry::{Apis, Context, Local, Registration};
use host::{ModuleName, Section};

use crate::{PaymentModule, Settings};

/// The payment module, for the composition root.
pub const REGISTRATION: Registration = Registration::new::<Settings>(
    ModuleName::Payment,
    crate::MODULE_MIGRATIONS,
    crate::http::configure,
    build,
)
.tags(&[(
    "payments",
    "Card payments and their ledger (through the SANDBOX provider: test cards only)",
)]);

impl Section for Settings {
    fn validate(&self, environment: &str) -> Result<(), (String, String)> {
        if environment == "production" && self.sandbox_embedded {
            return Err((
                "sandbox_embedded".into(),
                "must be false in production: set payment.provider_url".into(),
            ));
        }
        Ok(())
    }

    fn validate_served(&self, environment: &str) -> Result<(), (String, String)> {
        let sandbox = cfg!(feature = "sandbox") && self.sandbox_embedded;
        if self.provider_url.is_none() && (!sandbox || environment == "production") {
            return Err((
                "provider_url".into(),
                "required: the card provider's URL (this process serves the payment module, \
                 and no sandbox provider is started in it)"
                    .into(),
            ));
        }
        Ok(())
    }
}

fn build(cx: Context<'_>) -> BoxFuture<'_, anyhow::Result<Local>> {
    Box::pin(async move {
        let settings = cx.section::<Settings>()?;
        let mut jobs = Vec::new();
        let provider_url = match &settings.provider_url {
            Some(url) => url.clone(),
            #[cfg(feature = "sandbox")]
            None if settings.sandbox_embedded => {
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
                url::Url::parse(&format!("http://127.0.0.1:{port}/"))?
            }
            None => anyhow::bail!(
                "payment.provider_url: required (payment.sandbox_embedded is off, \
                 or this binary lacks the sandbox: cargo feature \"sandbox\")"
            ),
        };
        let provider = crate::provider::HttpProvider::new(
            cx.client.clone(),
            provider_url,
            cx.policy(Dependency::PaymentProvider),
        );
        let module = Data::new(PaymentModule::new(cx.pool.clone(), Arc::new(provider)));
        jobs.push(tokio::spawn(crate::service::upkeep(
            PaymentModule::clone(&module),
            cx.stopped.clone(),
        )));
        let api: Arc<dyn payment_api::PaymentApi> = module.clone().into_inner();
        let mut local = Local::new(module).apis(Apis {
            payment: Some(api),
            ..Apis::default()
        });
        local.jobs = jobs;
        Ok(local)
    })
}
