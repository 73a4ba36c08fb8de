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
        // Every instance forgets what any instance changes (`changes`),
        // listening before it serves. The shop starts without its database
        // (readiness says so); the follower then connects when it can.
        let connect = std::time::Duration::from_millis(cx.settings.database.connect_timeout_ms);
        let listening =
            match tokio::time::timeout(connect, crate::changes::listen(cx.database_url)).await {
                Ok(Ok(conn)) => Some(conn),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "catalog: cannot follow product changes yet");
                    None
                }
                Err(_) => {
                    tracing::warn!("catalog: cannot follow product changes yet: no answer in time");
                    None
                }
            };
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
