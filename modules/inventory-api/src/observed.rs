//! [`Observed`]: any [`InventoryApi`] with a span and RED metrics per call
//! (`kernel::observe`), the same whichever implementation it wraps.

use super::*;

kernel::observed!("inventory", InventoryApi, InventoryError, {
    fn stock(sku: &Sku) -> StockLevel;
    fn adjust(sku: &Sku, adjustment: Adjustment) -> StockLevel;
    fn movements(sku: &Sku, query: ListMovements) -> Page<Movement>;
    fn reserve(request: ReserveStock) -> Reservation;
    fn commit(order: OrderId) -> Reservation;
    fn release(order: OrderId) -> Reservation;
    fn restock(order: OrderId) -> Reservation;
    fn reservation(order: OrderId) -> Reservation;
});
