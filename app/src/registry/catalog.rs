//! The catalog module: products and categories, read through the product
//! cache that its event handler keeps fresh.

use std::sync::Arc;

use actix_web::web::Data;
use futures_util::future::BoxFuture;

use super::{Apis, Context, Local, Registration};
use crate::Settings;
use crate::modules::ModuleName;

pub(super) const REGISTRATION: Registration = Registration {
    module: ModuleName::Catalog,
    migrations: catalog::MODULE_MIGRATIONS,
    routes: catalog::http::configure,
    database,
    gauges: None,
    build,
};

fn database(settings: &Settings) -> &db::ModuleDatabase {
    &settings.catalog.database
}

fn build(cx: Context<'_>) -> BoxFuture<'_, anyhow::Result<Local>> {
    Box::pin(async move {
        let cache = catalog::ProductCache::new(&cx.settings.catalog.cache)
            .await
            .map_err(|e| anyhow::anyhow!("catalog.cache: {e}"))?;
        let subscription = events::Subscription {
            module: catalog::NAME,
            name: catalog::events::HANDLER,
            event_types: catalog::events::EVENT_TYPES.to_vec(),
            handler: Arc::new(catalog::CatalogEvents::new(cache.clone())),
            pool: cx.pool.clone(),
        };
        let module = Data::new(catalog::CatalogModule::new(cx.pool, cache));
        let api: Arc<dyn catalog_api::CatalogApi> = module.clone().into_inner();
        Ok(Local::new(module).subscription(subscription).apis(Apis {
            catalog: Some(api),
            ..Apis::default()
        }))
    })
}
