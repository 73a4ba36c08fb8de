//! [`Observed`]: any [`InventoryApi`] with a span and RED metrics per call
//! (`kernel::observe`), the same whichever implementation it wraps.

use std::sync::Arc;

use super::*;

/// Wraps an implementation of [`InventoryApi`] so that every call is observed
/// under the module name `inventory`.
pub struct Observed(pub Arc<dyn InventoryApi>);

#[async_trait::async_trait]
impl InventoryApi for Observed {
    async fn stock(&self, cx: &CallContext, sku: &Sku) -> Result<StockLevel, InventoryError> {
        kernel::observe::module_call("inventory", "stock", self.0.stock(cx, sku)).await
    }

    async fn adjust(
        &self,
        cx: &CallContext,
        sku: &Sku,
        adjustment: Adjustment,
    ) -> Result<StockLevel, InventoryError> {
        kernel::observe::module_call("inventory", "adjust", self.0.adjust(cx, sku, adjustment))
            .await
    }

    async fn movements(
        &self,
        cx: &CallContext,
        sku: &Sku,
        query: ListMovements,
    ) -> Result<Page<Movement>, InventoryError> {
        kernel::observe::module_call("inventory", "movements", self.0.movements(cx, sku, query))
            .await
    }

    async fn reserve(
        &self,
        cx: &CallContext,
        request: ReserveStock,
    ) -> Result<Reservation, InventoryError> {
        kernel::observe::module_call("inventory", "reserve", self.0.reserve(cx, request)).await
    }

    async fn commit(
        &self,
        cx: &CallContext,
        order: OrderId,
    ) -> Result<Reservation, InventoryError> {
        kernel::observe::module_call("inventory", "commit", self.0.commit(cx, order)).await
    }

    async fn release(
        &self,
        cx: &CallContext,
        order: OrderId,
    ) -> Result<Reservation, InventoryError> {
        kernel::observe::module_call("inventory", "release", self.0.release(cx, order)).await
    }

    async fn restock(
        &self,
        cx: &CallContext,
        order: OrderId,
    ) -> Result<Reservation, InventoryError> {
        kernel::observe::module_call("inventory", "restock", self.0.restock(cx, order)).await
    }

    async fn reservation(
        &self,
        cx: &CallContext,
        order: OrderId,
    ) -> Result<Reservation, InventoryError> {
        kernel::observe::module_call("inventory", "reservation", self.0.reservation(cx, order))
            .await
    }
}
