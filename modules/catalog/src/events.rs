//! The catalog's event handler: the availability read model (from
//! inventory events) and cache invalidation (from its own events: on
//! RabbitMQ they reach one instance of the module, so the other instances
//! learn of a change from the database, `crate::changes`).

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

/// What a stock change announces: the SKU's availability, at its version.
fn announced(stock: &StockChanged) -> repo::Announced<'_> {
    repo::Announced {
        sku: stock.sku.as_str(),
        availability: availability(stock),
        version: stock.version,
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
                let stock: StockChanged = event.payload().map_err(HandlerError::new)?;
                // Kept for a SKU the catalog does not sell yet, too: its
                // product starts from it when created.
                repo::set_availability(conn, announced(&stock)).await?
            }
            t if t == ProductUpdated::TYPE => Some(
                event
                    .payload::<ProductUpdated>()
                    .map_err(HandlerError::new)?
                    .product_id,
            ),
            t if t == ProductPriceChanged::TYPE => Some(
                event
                    .payload::<ProductPriceChanged>()
                    .map_err(HandlerError::new)?
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

    /// The batch's stock changes together (`repo::set_availabilities`: the
    /// newest change of each SKU is the one that stands, as one by one);
    /// the rest one by one.
    async fn handle_batch(
        &self,
        conn: &mut AsyncPgConnection,
        events: &[&Envelope],
    ) -> Result<(), HandlerError> {
        // Per SKU, in first-seen order: its newest change (the highest
        // version; among unversioned ones, the last) and the event with it.
        let mut changes: Vec<(StockChanged, uuid::Uuid)> = Vec::new();
        for event in events {
            if event.event_type != StockChanged::TYPE {
                self.handle(conn, event).await?;
                continue;
            }
            let stock: StockChanged = event.payload().map_err(HandlerError::new)?;
            match changes.iter_mut().find(|(seen, _)| seen.sku == stock.sku) {
                // An unversioned change (from an instance before versions)
                // is taken as it comes, as the statement takes it.
                Some(entry) if stock.version.is_none() || stock.version >= entry.0.version => {
                    *entry = (stock, event.id)
                }
                Some(_) => {}
                None => changes.push((stock, event.id)),
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        let announced: Vec<repo::Announced<'_>> =
            changes.iter().map(|(stock, _)| announced(stock)).collect();
        for changed in repo::set_availabilities(conn, &announced).await? {
            let id = ProductId::from(changed.id);
            self.cache.invalidate(id).await;
            let event = changes
                .iter()
                .find(|(stock, _)| stock.sku.as_str() == changed.sku)
                .map(|(_, event)| *event);
            if let (Some(event), Ok(mut pending)) = (event, self.pending.lock()) {
                pending.insert(event, id);
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
            version: Some(1),
        };
        assert_eq!(availability(&stock(0, Some(3))), Availability::OutOfStock);
        assert_eq!(availability(&stock(3, Some(3))), Availability::LowStock);
        assert_eq!(availability(&stock(4, Some(3))), Availability::InStock);
        assert_eq!(availability(&stock(1, None)), Availability::InStock);
    }
}
