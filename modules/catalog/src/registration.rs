//! The catalog as the process hosting it sees it: products and categories,
//! read through the product cache that its event handler keeps fresh.

use std::sync::Arc;

use actix_web::web::Data;
use futures_util::future::BoxFuture;
use host::registry::{Apis, Context, Local, Registration};
use host::{ModuleName, Section};

use crate::{CatalogEvents, CatalogModule, ProductCache, Settings};

/// The catalog module, for the composition root.
pub const REGISTRATION: Registration = Registration::new::<Settings>(
    ModuleName::Catalog,
    crate::MODULE_MIGRATIONS,
    crate::http::configure,
    build,
)
.tags(&[("catalog", "Products")]);

impl Section for Settings {}

fn build(cx: Context<'_>) -> BoxFuture<'_, anyhow::Result<Local>> {
    Box::pin(async move {
        let settings = cx.section::<Settings>()?;
        let cache = ProductCache::new(&settings.cache)
            .await
            .map_err(|e| anyhow::anyhow!("catalog.cache: {e}"))?;
        let subscription = events::Subscription {
            module: crate::NAME,
            name: crate::events::HANDLER,
            event_types: crate::events::EVENT_TYPES.to_vec(),
            handler: Arc::new(CatalogEvents::new(cache.clone())),
            pool: cx.pool.clone(),
        };
        let searches = crate::Searches::new(&settings.search);
        // Every instance forgets what any instance changes (`changes`).
        let listening = crate::changes::listen(cx.database_url)
            .await
            .map_err(|e| anyhow::anyhow!("catalog: cannot follow product changes: {e}"))?;
        let follow = crate::changes::follow(
            listening,
            cx.database_url.to_owned(),
            cache.clone(),
            cx.stopped.clone(),
        );
        let module = Data::new(CatalogModule::new(cx.pool, cache, searches));
        let api: Arc<dyn catalog_api::CatalogApi> = module.clone().into_inner();
        Ok(Local::new(module)
            .subscription(subscription)
            .job(tokio::spawn(follow))
            .apis(Apis {
                catalog: Some(api),
                ..Apis::default()
            }))
    })
}
