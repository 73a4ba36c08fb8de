//! The catalog's event handler: the availability read model (from
//! inventory events) and cache invalidation (from its own events, which
//! reach every instance on the broker transport).

use catalog_api::events::{ProductPriceChanged, ProductUpdated};
use catalog_api::{Availability, ProductId};
use diesel_async::AsyncPgConnection;
use events::{EventHandler, HandlerError};
use inventory_api::events::StockChanged;
use kernel::{Envelope, IntegrationEvent as _};

use crate::cache::ProductCache;
use crate::repo;

/// Name of the handler (inbox, dead letters).
pub const HANDLER: &str = "catalog.read_model";

/// Event types the catalog handles.
pub use catalog_api::SUBSCRIBES as EVENT_TYPES;

/// Keeps product availability and the product cache up to date.
#[derive(Clone)]
pub struct CatalogEvents {
    cache: ProductCache,
    /// Products to invalidate again once the handler's transaction has
    /// committed, by event id: a read between the first invalidation and
    /// the commit may have cached the old row.
    pending: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<uuid::Uuid, ProductId>>>,
}

impl CatalogEvents {
    /// A handler invalidating `cache`.
    pub fn new(cache: ProductCache) -> CatalogEvents {
        CatalogEvents {
            cache,
            pending: std::sync::Arc::default(),
        }
    }
}

/// Availability from a stock level: none, at or below the threshold, or plenty.
fn availability(stock: &StockChanged) -> Availability {
    match (stock.available, stock.low_stock_threshold) {
        (a, _) if a <= 0 => Availability::OutOfStock,
        (a, Some(threshold)) if a <= threshold => Availability::LowStock,
        _ => Availability::InStock,
    }
}

#[async_trait::async_trait]
impl EventHandler for CatalogEvents {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &Envelope,
    ) -> Result<(), HandlerError> {
        let product = match event.event_type.as_str() {
            t if t == StockChanged::TYPE => {
                let stock: StockChanged = event.payload().map_err(HandlerError)?;
                // A SKU the catalog does not sell (yet) is nothing to update.
                repo::set_availability(conn, stock.sku.as_str(), availability(&stock)).await?
            }
            t if t == ProductUpdated::TYPE => Some(
                event
                    .payload::<ProductUpdated>()
                    .map_err(HandlerError)?
                    .product_id,
            ),
            t if t == ProductPriceChanged::TYPE => Some(
                event
                    .payload::<ProductPriceChanged>()
                    .map_err(HandlerError)?
                    .product_id,
            ),
            _ => None,
        };
        if let Some(id) = product {
            self.cache.invalidate(id).await;
            if let Ok(mut pending) = self.pending.lock() {
                pending.insert(event.id, id);
            }
        }
        Ok(())
    }

    async fn finished(&self, event: &Envelope, committed: bool) {
        let id = self
            .pending
            .lock()
            .ok()
            .and_then(|mut pending| pending.remove(&event.id));
        if let (Some(id), true) = (id, committed) {
            self.cache.invalidate(id).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_follows_the_threshold() {
        let stock = |available, threshold| StockChanged {
            sku: catalog_api::Sku::parse("A").unwrap(),
            on_hand: 10,
            reserved: 10 - available,
            available,
            low_stock_threshold: threshold,
        };
        assert_eq!(availability(&stock(0, Some(3))), Availability::OutOfStock);
        assert_eq!(availability(&stock(3, Some(3))), Availability::LowStock);
        assert_eq!(availability(&stock(4, Some(3))), Availability::InStock);
        assert_eq!(availability(&stock(1, None)), Availability::InStock);
    }
}
