//! The inventory as the process hosting it sees it: stock and reservations,
//! with the job that expires reservations past their time.

use std::sync::Arc;

use actix_web::web::Data;
use futures_util::future::BoxFuture;
use host::registry::{Apis, Context, Local, Registration};
use host::{ModuleName, Section};

use crate::{ExpiryJob, InventoryModule, Settings};

/// The inventory module, for the composition root.
pub const REGISTRATION: Registration = Registration::new::<Settings>(
    ModuleName::Inventory,
    crate::MODULE_MIGRATIONS,
    crate::http::configure,
    build,
)
.tags(&[("inventory", "Stock per SKU, its history, reservations")]);

impl Section for Settings {}

fn build(cx: Context<'_>) -> BoxFuture<'_, anyhow::Result<Local>> {
    Box::pin(async move {
        let module = InventoryModule::new(cx.pool.clone(), cx.section::<Settings>()?.clone());
        let job = ExpiryJob::new(module.clone());
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
