//! The inventory module: stock and reservations, with the job that expires
//! reservations past their time.

use std::sync::Arc;

use actix_web::web::Data;
use futures_util::future::BoxFuture;

use super::{Apis, Context, Local, Registration};
use crate::Settings;
use crate::modules::ModuleName;

pub(super) const REGISTRATION: Registration = Registration {
    module: ModuleName::Inventory,
    migrations: inventory::MODULE_MIGRATIONS,
    routes: inventory::http::configure,
    database,
    gauges: None,
    build,
};

fn database(settings: &Settings) -> &db::ModuleDatabase {
    &settings.inventory.database
}

fn build(cx: Context<'_>) -> BoxFuture<'_, anyhow::Result<Local>> {
    Box::pin(async move {
        let module = inventory::InventoryModule::new(cx.pool, cx.settings.inventory.clone());
        let job = inventory::ExpiryJob::new(module.clone());
        let module = Data::new(module);
        let api: Arc<dyn inventory_api::InventoryApi> = module.clone().into_inner();
        Ok(Local::new(module)
            .job(tokio::spawn(job.run(cx.stopped.clone())))
            .apis(Apis {
                inventory: Some(api),
                ..Apis::default()
            }))
    })
}
