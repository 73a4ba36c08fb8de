//! The order module as the process hosting it sees it: carts, orders and
//! the checkout saga, which calls the catalog, inventory and payment modules
//! in process when they are served here and over HTTP otherwise; its
//! recovery worker resumes sagas.

use std::sync::Arc;

use actix_web::web::Data;
use futures_util::future::BoxFuture;
use host::registry::{Context, Local, Registration};
use host::{ModuleName, Section};

use crate::{Dependencies, OrderModule, RecoveryWorker, Settings};

/// The order module, for the composition root.
pub const REGISTRATION: Registration = Registration::new::<Settings>(
    ModuleName::Order,
    crate::MODULE_MIGRATIONS,
    crate::http::configure,
    build,
)
.tags(&[(
    "orders",
    "Cart, checkout (with Idempotency-Key), orders and their timeline",
)])
.gauges(|pool| Box::pin(crate::record_metrics(pool)));

impl Section for Settings {
    fn validate(&self, environment: &str) -> Result<(), (String, String)> {
        if environment == "production" && self.crash_at.is_some() {
            return Err((
                "crash_at".into(),
                "is a failpoint for tests and must be unset in production".into(),
            ));
        }
        if self.max_step_attempts < 1 {
            return Err(("max_step_attempts".into(), "must be at least 1".into()));
        }
        if self.lease_secs == 0 || self.recovery_interval_ms == 0 {
            return Err((
                "lease_secs".into(),
                "and order.recovery_interval_ms must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

fn build(cx: Context<'_>) -> BoxFuture<'_, anyhow::Result<Local>> {
    Box::pin(async move {
        let deps = Dependencies {
            catalog: cx.module_api(
                ModuleName::Catalog,
                cx.apis.catalog.clone(),
                |client, base, policy| {
                    Arc::new(catalog_api::client::CatalogClient::new(
                        client, base, policy,
                    ))
                },
                |api| Arc::new(catalog_api::observed::Observed(api)),
            )?,
            inventory: cx.module_api(
                ModuleName::Inventory,
                cx.apis.inventory.clone(),
                |client, base, policy| {
                    Arc::new(inventory_api::client::InventoryClient::new(
                        client, base, policy,
                    ))
                },
                |api| Arc::new(inventory_api::observed::Observed(api)),
            )?,
            payment: cx.module_api(
                ModuleName::Payment,
                cx.apis.payment.clone(),
                |client, base, policy| {
                    Arc::new(payment_api::client::PaymentClient::new(
                        client, base, policy,
                    ))
                },
                |api| Arc::new(payment_api::observed::Observed(api)),
            )?,
            services: Arc::clone(cx.services),
        };
        let settings = cx.section::<Settings>()?.clone();
        let module = OrderModule::new(cx.pool, deps, settings);
        let worker = RecoveryWorker::new(module.clone());
        Ok(Local::new(Data::new(module)).job(tokio::spawn(worker.run(cx.stopped.clone()))))
    })
}
