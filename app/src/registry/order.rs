//! The order module: carts, orders and the checkout saga, which calls the
//! catalog, inventory and payment modules in process when they are served
//! here and over HTTP otherwise; its recovery worker resumes sagas.

use std::sync::Arc;

use actix_web::web::Data;
use futures_util::future::BoxFuture;

use super::{Context, Local, Registration};
use crate::Settings;
use crate::compose::{self, Dependency};
use crate::modules::ModuleName;

pub(super) const REGISTRATION: Registration = Registration {
    module: ModuleName::Order,
    migrations: order::MODULE_MIGRATIONS,
    routes: order::http::configure,
    database,
    gauges: Some(|pool| Box::pin(order::record_metrics(pool))),
    build,
};

fn database(settings: &Settings) -> &db::ModuleDatabase {
    &settings.order.database
}

fn build(cx: Context<'_>) -> BoxFuture<'_, anyhow::Result<Local>> {
    Box::pin(async move {
        let (settings, client, policies) = (cx.settings, cx.client, cx.policies);
        let policy = |module| policies.get(Dependency::Module(module));
        let deps = order::Dependencies {
            catalog: compose::module_api(
                settings,
                ModuleName::Catalog,
                cx.apis.catalog.clone(),
                |base| {
                    Arc::new(catalog_api::client::CatalogClient::new(
                        client.clone(),
                        base,
                        policy(ModuleName::Catalog),
                    ))
                },
                |api| Arc::new(catalog_api::observed::Observed(api)),
            )?,
            inventory: compose::module_api(
                settings,
                ModuleName::Inventory,
                cx.apis.inventory.clone(),
                |base| {
                    Arc::new(inventory_api::client::InventoryClient::new(
                        client.clone(),
                        base,
                        policy(ModuleName::Inventory),
                    ))
                },
                |api| Arc::new(inventory_api::observed::Observed(api)),
            )?,
            payment: compose::module_api(
                settings,
                ModuleName::Payment,
                cx.apis.payment.clone(),
                |base| {
                    Arc::new(payment_api::client::PaymentClient::new(
                        client.clone(),
                        base,
                        policy(ModuleName::Payment),
                    ))
                },
                |api| Arc::new(payment_api::observed::Observed(api)),
            )?,
            services: Arc::clone(cx.services),
        };
        let module = order::OrderModule::new(cx.pool, deps, settings.order.clone());
        let worker = order::RecoveryWorker::new(module.clone());
        Ok(Local::new(Data::new(module)).job(tokio::spawn(worker.run(cx.stopped.clone()))))
    })
}
