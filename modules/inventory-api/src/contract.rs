//! The contract suite: what every [`InventoryApi`] implementation must do.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use catalog_api::Sku;
use kernel::{CallContext, Failure, PageLimit};

use crate::{
    Adjustment, InventoryApi, InventoryError, ListMovements, OrderId, Reservation, ReservationLine,
    ReservationStatus, ReserveStock,
};

/// What a contract case runs against.
pub struct Harness {
    /// The implementation under test.
    pub api: Arc<dyn InventoryApi>,
    /// An admin's context.
    pub admin: CallContext,
    /// The order module's context (the `service` role): the only caller
    /// that makes and moves reservations.
    pub service: CallContext,
    /// A customer's context.
    pub customer: CallContext,
}

impl Harness {
    /// The stock of `raw`: on hand, reserved, available.
    async fn level(&self, raw: &str) -> (i32, i32, i32) {
        let level = self.api.stock(&self.admin, &sku(raw)).await.unwrap();
        (level.on_hand, level.reserved, level.available)
    }

    /// Receives `quantity` units of `raw`.
    async fn receive(&self, raw: &str, quantity: i32) {
        self.api
            .adjust(&self.admin, &sku(raw), receive(quantity))
            .await
            .unwrap();
    }

    /// Receives `stock` units of `raw`, then reserves `quantity` of them for
    /// a new order: that order.
    async fn stocked_and_reserved(&self, raw: &str, stock: i32, quantity: i32) -> OrderId {
        self.receive(raw, stock).await;
        let order = OrderId::generate();
        let reserve = ReserveStock {
            order_id: order,
            lines: vec![line(raw, quantity)],
        };
        self.api.reserve(&self.service, reserve).await.unwrap();
        order
    }

    /// `settle`s `order`'s reservation.
    async fn settle(&self, settle: Settle, order: OrderId) -> Result<Reservation, InventoryError> {
        match settle {
            Settle::Commit => self.api.commit(&self.service, order).await,
            Settle::Release => self.api.release(&self.service, order).await,
            Settle::Restock => self.api.restock(&self.service, order).await,
        }
    }

    /// `settle`s `order` twice: both answer the same reservation, in
    /// `status` (a settlement asked again changes nothing).
    async fn settled_twice(
        &self,
        settle: Settle,
        order: OrderId,
        status: ReservationStatus,
    ) -> Reservation {
        let settled = self.settle(settle, order).await.unwrap();
        assert_eq!(settled.status, status);
        assert_eq!(
            self.settle(settle, order).await.unwrap(),
            settled,
            "idempotent"
        );
        settled
    }

    /// `settle` of an order nothing was reserved for: not found.
    async fn refuses_unknown_order(&self, settle: Settle) {
        let missing = OrderId::generate();
        assert_eq!(
            self.settle(settle, missing).await.unwrap_err(),
            InventoryError::ReservationNotFound(missing)
        );
    }
}

/// What can happen to a reservation once made.
#[derive(Debug, Clone, Copy)]
enum Settle {
    Commit,
    Release,
    Restock,
}

/// Whether `error` refuses a move because the reservation is `status`.
fn refused_as(error: InventoryError, status: ReservationStatus) -> bool {
    matches!(error, InventoryError::InvalidTransition { status: s, .. } if s == status)
}

fn sku(raw: &str) -> Sku {
    Sku::parse(raw).unwrap()
}

fn receive(quantity: i32) -> Adjustment {
    Adjustment {
        quantity,
        reason: "receive".to_owned(),
        low_stock_threshold: None,
        idempotency_key: None,
    }
}

/// `quantity` units for `reason`, under the idempotency key `key`.
fn keyed(key: &str, quantity: i32, reason: &str) -> Adjustment {
    Adjustment {
        quantity,
        reason: reason.to_owned(),
        low_stock_threshold: None,
        idempotency_key: Some(key.to_owned()),
    }
}

fn line(raw: &str, quantity: i32) -> ReservationLine {
    ReservationLine {
        sku: sku(raw),
        quantity,
    }
}

/// A SKU never stocked has zero of everything.
pub async fn unknown_skus_have_no_stock(h: &Harness) {
    let level = h.api.stock(&h.admin, &sku("NEVER-1")).await.unwrap();
    assert_eq!((level.on_hand, level.reserved, level.available), (0, 0, 0));
    assert_eq!(level.updated_at, None);
}

/// Receiving adds, corrections remove, never below what is reserved.
pub async fn adjustments_receive_and_correct(h: &Harness) {
    let s = sku("ADJ-1");
    let level = h.api.adjust(&h.admin, &s, receive(10)).await.unwrap();
    assert_eq!(
        (level.on_hand, level.reserved, level.available),
        (10, 0, 10)
    );
    let level = h.api.adjust(&h.admin, &s, receive(-3)).await.unwrap();
    assert_eq!(level.available, 7);
    let err = h.api.adjust(&h.admin, &s, receive(-8)).await.unwrap_err();
    assert_eq!(
        err,
        InventoryError::InsufficientStock(vec!["ADJ-1".to_owned()])
    );
    let bad = Adjustment {
        quantity: 0,
        reason: " ".to_owned(),
        low_stock_threshold: Some(-1),
        idempotency_key: None,
    };
    let InventoryError::Common(Failure::Validation(errors)) =
        h.api.adjust(&h.admin, &s, bad).await.unwrap_err()
    else {
        panic!("expected Validation");
    };
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["quantity", "reason", "low_stock_threshold"]);
    assert_eq!(h.api.stock(&h.admin, &s).await.unwrap().on_hand, 7);
}

/// An adjustment asked again under its idempotency key (its answer was
/// lost) moves the stock once, and answers the stock as it is now; the key
/// with another quantity or reason is refused. A key is the SKU's own; a
/// refused adjustment keeps nothing under its key; a key outside its form
/// is refused.
pub async fn a_keyed_adjustment_moves_the_stock_once(h: &Harness) {
    let adjust = |raw: &'static str, adjustment: Adjustment| async move {
        h.api.adjust(&h.admin, &sku(raw), adjustment).await
    };
    let first = adjust("KEY-1", keyed("delivery-42", 10, "receive")).await;
    assert_eq!(first.unwrap().on_hand, 10);
    let again = adjust("KEY-1", keyed("delivery-42", 10, "receive")).await;
    assert_eq!(again.unwrap().on_hand, 10, "moved once");
    for other in [
        keyed("delivery-42", 11, "receive"),
        keyed("delivery-42", 10, "count"),
    ] {
        assert_eq!(
            adjust("KEY-1", other).await.unwrap_err(),
            InventoryError::IdempotencyKeyReused
        );
    }
    h.receive("KEY-1", 1).await;
    let replayed = adjust("KEY-1", keyed("delivery-42", 10, "receive")).await;
    assert_eq!(replayed.unwrap().on_hand, 11, "the stock as it is now");
    let history = (h.api)
        .movements(&h.admin, &sku("KEY-1"), ListMovements::default())
        .await;
    let quantities: Vec<_> = history.unwrap().items.iter().map(|m| m.quantity).collect();
    assert_eq!(quantities, [1, 10], "one movement per adjustment made");
    // Another SKU's adjustment under the same key is another adjustment.
    let other = adjust("KEY-2", keyed("delivery-42", 3, "receive")).await;
    assert_eq!(other.unwrap().on_hand, 3);
    // Refused, it keeps nothing: the key goes on to make the adjustment.
    let short = adjust("KEY-1", keyed("count-7", -20, "count")).await;
    assert_eq!(
        short.unwrap_err(),
        InventoryError::InsufficientStock(vec!["KEY-1".to_owned()])
    );
    h.receive("KEY-1", 20).await;
    let counted = adjust("KEY-1", keyed("count-7", -20, "count")).await;
    assert_eq!(counted.unwrap().on_hand, 11);
    let too_long = "k".repeat(256);
    for bad in ["", "two words", too_long.as_str()] {
        assert_eq!(
            adjust("KEY-1", keyed(bad, 1, "receive")).await.unwrap_err(),
            InventoryError::InvalidIdempotencyKey,
            "{bad:?}"
        );
    }
    assert_eq!(h.level("KEY-1").await, (11, 0, 11));
}

/// All lines or none: one short SKU fails the whole reservation and names it.
pub async fn reservations_take_all_lines_or_none(h: &Harness) {
    h.receive("ALL-A", 5).await;
    h.receive("ALL-B", 1).await;
    let request = ReserveStock {
        order_id: OrderId::generate(),
        lines: vec![line("ALL-A", 2), line("ALL-B", 2), line("ALL-C", 1)],
    };
    let err = h.api.reserve(&h.service, request).await.unwrap_err();
    assert_eq!(
        err,
        InventoryError::InsufficientStock(vec!["ALL-B".to_owned(), "ALL-C".to_owned()])
    );
    assert_eq!(h.level("ALL-A").await, (5, 0, 5), "nothing held");
}

/// Reserving again for the same order returns the same reservation and
/// holds the stock once; other lines for the same order conflict and hold
/// nothing more.
pub async fn reservations_are_idempotent_by_order(h: &Harness) {
    h.receive("IDEM-1", 5).await;
    let request = ReserveStock {
        order_id: OrderId::generate(),
        lines: vec![line("IDEM-1", 2)],
    };
    let first = h.api.reserve(&h.service, request.clone()).await.unwrap();
    assert_eq!(first.status, ReservationStatus::Active);
    let again = h.api.reserve(&h.service, request.clone()).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(h.level("IDEM-1").await, (5, 2, 3), "held once");
    let other = ReserveStock {
        order_id: request.order_id,
        lines: vec![line("IDEM-1", 3)],
    };
    assert_eq!(
        h.api.reserve(&h.service, other).await.unwrap_err(),
        InventoryError::ReservationConflict(request.order_id)
    );
    assert_eq!(
        h.level("IDEM-1").await,
        (5, 2, 3),
        "the conflict holds nothing"
    );
    assert_eq!(
        h.api.reservation(&h.admin, request.order_id).await.unwrap(),
        first
    );
}

/// Committing turns held stock into a sale; it cannot be released after.
pub async fn commit_makes_a_sale(h: &Harness) {
    settled_for_good(h, "SALE-1", 2, Settle::Commit, (3, 0, 3)).await;
}

/// A sale put back (the order was cancelled after it): the units are on
/// hand again, once however often it is asked; only a sale can be.
pub async fn restock_puts_a_sale_back(h: &Harness) {
    let order = h.stocked_and_reserved("BACK-1", 5, 2).await;
    let refused = h.api.restock(&h.service, order).await.unwrap_err();
    assert!(refused_as(refused, ReservationStatus::Active));
    h.api.commit(&h.service, order).await.unwrap();
    for _ in 0..2 {
        let returned = h.api.restock(&h.service, order).await.unwrap();
        assert_eq!(returned.status, ReservationStatus::Returned);
    }
    assert_eq!(h.level("BACK-1").await, (5, 0, 5));
    h.refuses_unknown_order(Settle::Restock).await;
}

/// Releasing gives the stock back; it cannot be committed after.
pub async fn release_gives_stock_back(h: &Harness) {
    settled_for_good(h, "REL-1", 4, Settle::Release, (5, 0, 5)).await;
}

/// Reserves `quantity` of 5 units of `raw`, then `settle`s (a commit or a
/// release) twice: stock is `after`; the other settlement is refused; an
/// unknown order is not found.
async fn settled_for_good(
    h: &Harness,
    raw: &str,
    quantity: i32,
    settle: Settle,
    after: (i32, i32, i32),
) {
    let order = h.stocked_and_reserved(raw, 5, quantity).await;
    assert_eq!(h.level(raw).await, (5, quantity, 5 - quantity));
    let (status, other) = match settle {
        Settle::Commit => (ReservationStatus::Committed, Settle::Release),
        _ => (ReservationStatus::Released, Settle::Commit),
    };
    h.settled_twice(settle, order, status).await;
    assert_eq!(h.level(raw).await, after);
    let refused = h.settle(other, order).await.unwrap_err();
    assert!(refused_as(refused, status));
    h.refuses_unknown_order(settle).await;
}

/// A release that comes before its reservation (the caller gave up on a
/// reserve still on its way and turned back) fences the order off: the
/// reserve, when it lands, holds nothing; the order stays unknown.
pub async fn a_release_before_its_reservation_fences_it_off(h: &Harness) {
    h.receive("FENCE-1", 5).await;
    let order = OrderId::generate();
    for _ in 0..2 {
        assert_eq!(
            h.api.release(&h.service, order).await.unwrap_err(),
            InventoryError::ReservationNotFound(order)
        );
    }
    let late = ReserveStock {
        order_id: order,
        lines: vec![line("FENCE-1", 2)],
    };
    let refused = h.api.reserve(&h.service, late).await.unwrap_err();
    assert!(refused_as(refused, ReservationStatus::Released));
    assert_eq!(h.level("FENCE-1").await, (5, 0, 5), "nothing held");
    assert_eq!(
        h.api.reservation(&h.admin, order).await.unwrap_err(),
        InventoryError::ReservationNotFound(order)
    );
    assert_eq!(
        h.api.commit(&h.service, order).await.unwrap_err(),
        InventoryError::ReservationNotFound(order)
    );
}

/// A reserve asked again after its reservation was released is refused
/// as released: answered as held, its caller would go on to a sale of
/// stock that went back to the shelf.
pub async fn a_reserve_replayed_after_its_release_holds_nothing(h: &Harness) {
    let order = h.stocked_and_reserved("REPLAY-1", 5, 2).await;
    h.api.release(&h.service, order).await.unwrap();
    let replay = ReserveStock {
        order_id: order,
        lines: vec![line("REPLAY-1", 2)],
    };
    let refused = h.api.reserve(&h.service, replay).await.unwrap_err();
    assert!(refused_as(refused, ReservationStatus::Released));
    assert_eq!(h.level("REPLAY-1").await, (5, 0, 5), "nothing held");
}

/// A reserve asked again after its sale was put back (committed, then
/// restocked) is refused as returned: answered as held, its caller would
/// go on to a sale of units already back on the shelf.
pub async fn a_reserve_replayed_after_its_return_holds_nothing(h: &Harness) {
    let order = h.stocked_and_reserved("REPLAY-2", 5, 2).await;
    h.api.commit(&h.service, order).await.unwrap();
    h.api.restock(&h.service, order).await.unwrap();
    assert_eq!(h.level("REPLAY-2").await, (5, 0, 5));
    let replay = ReserveStock {
        order_id: order,
        lines: vec![line("REPLAY-2", 2)],
    };
    let refused = h.api.reserve(&h.service, replay).await.unwrap_err();
    assert!(
        refused_as(refused.clone(), ReservationStatus::Returned),
        "{refused:?}"
    );
    assert_eq!(h.level("REPLAY-2").await, (5, 0, 5), "nothing held");
    assert_eq!(
        h.api.reservation(&h.admin, order).await.unwrap().status,
        ReservationStatus::Returned
    );
}

/// Every change is a movement, newest first, paginated.
pub async fn movements_record_the_history(h: &Harness) {
    let s = sku("HIST-1");
    let order = h.stocked_and_reserved("HIST-1", 5, 2).await;
    h.api.commit(&h.service, order).await.unwrap();
    let page = |cursor| ListMovements {
        limit: PageLimit::new(2).unwrap(),
        cursor,
    };
    let first = h.api.movements(&h.admin, &s, page(None)).await.unwrap();
    let kinds: Vec<_> = first.items.iter().map(|m| m.kind.as_str()).collect();
    assert_eq!(kinds, ["sale", "reservation"]);
    assert_eq!(first.items[0].order_id, Some(order));
    assert_eq!(
        (first.items[0].on_hand_after, first.items[0].reserved_after),
        (3, 0)
    );
    let rest = h
        .api
        .movements(&h.admin, &s, page(first.next_cursor))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.items[0].kind, "adjustment");
    assert_eq!(rest.items[0].reason.as_deref(), Some("receive"));
    assert_eq!(rest.next_cursor, None);
}

/// A cursor of one SKU's history goes on with that history only: on
/// another SKU's it is refused, not read as a place in it.
pub async fn a_movements_cursor_goes_with_its_sku_only(h: &Harness) {
    h.receive("CUR-A", 1).await;
    h.receive("CUR-A", 1).await;
    h.receive("CUR-B", 1).await;
    h.receive("CUR-B", 1).await;
    let page = |cursor| ListMovements {
        limit: PageLimit::new(1).unwrap(),
        cursor,
    };
    let first = h
        .api
        .movements(&h.admin, &sku("CUR-A"), page(None))
        .await
        .unwrap();
    let cursor = first.next_cursor.expect("a second page");
    let other = h
        .api
        .movements(&h.admin, &sku("CUR-B"), page(Some(cursor.clone())))
        .await;
    assert_eq!(
        other.unwrap_err(),
        InventoryError::Common(Failure::InvalidCursor)
    );
    let rest = h
        .api
        .movements(&h.admin, &sku("CUR-A"), page(Some(cursor)))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.next_cursor, None);
}

/// Reservations are the order module's (the `service` role): its saga
/// owns them. An admin (or a customer) can neither make nor move one, and
/// nothing changes; an admin still reads them.
pub async fn only_the_order_module_moves_reservations(h: &Harness) {
    let forbidden = InventoryError::Common(Failure::Forbidden);
    h.receive("OWN-1", 5).await;
    let order = OrderId::generate();
    let request = ReserveStock {
        order_id: order,
        lines: vec![line("OWN-1", 2)],
    };
    for cx in [&h.admin, &h.customer] {
        assert_eq!(
            h.api.reserve(cx, request.clone()).await.unwrap_err(),
            forbidden
        );
    }
    assert_eq!(h.level("OWN-1").await, (5, 0, 5), "nothing held");
    assert_eq!(
        h.api.reservation(&h.admin, order).await.unwrap_err(),
        InventoryError::ReservationNotFound(order),
        "not made"
    );
    let reserved = h.api.reserve(&h.service, request).await.unwrap();
    assert_eq!(reserved.status, ReservationStatus::Active);
    for cx in [&h.admin, &h.customer] {
        assert_eq!(h.api.commit(cx, order).await.unwrap_err(), forbidden);
        assert_eq!(h.api.release(cx, order).await.unwrap_err(), forbidden);
    }
    assert_eq!(h.level("OWN-1").await, (5, 2, 3), "still held");
    h.api.commit(&h.service, order).await.unwrap();
    for cx in [&h.admin, &h.customer] {
        assert_eq!(h.api.restock(cx, order).await.unwrap_err(), forbidden);
    }
    assert_eq!(h.level("OWN-1").await, (3, 0, 3), "still sold");
    assert_eq!(
        h.api.reservation(&h.admin, order).await.unwrap().status,
        ReservationStatus::Committed
    );
    let returned = h.api.restock(&h.service, order).await.unwrap();
    assert_eq!(returned.status, ReservationStatus::Returned);
    assert_eq!(h.level("OWN-1").await, (5, 0, 5));
    assert_eq!(
        h.api
            .reserve(
                &CallContext::background(),
                ReserveStock {
                    order_id: OrderId::generate(),
                    lines: vec![line("OWN-1", 1)],
                },
            )
            .await
            .unwrap_err(),
        InventoryError::Common(Failure::Unauthenticated)
    );
}

/// The inventory is for admins.
pub async fn only_admins_touch_stock(h: &Harness) {
    let s = sku("AUTHZ-1");
    assert_eq!(
        h.api.stock(&h.customer, &s).await.unwrap_err(),
        InventoryError::Common(Failure::Forbidden)
    );
    assert_eq!(
        h.api
            .adjust(&CallContext::background(), &s, receive(1))
            .await
            .unwrap_err(),
        InventoryError::Common(Failure::Unauthenticated)
    );
}

/// Generates one `#[tokio::test]` per contract case for a setup function
/// returning `(Harness, guard)`.
#[macro_export]
macro_rules! inventory_contract_suite {
    ($setup:path) => {
        $crate::inventory_contract_suite!(@cases $setup,
            unknown_skus_have_no_stock,
            adjustments_receive_and_correct,
            a_keyed_adjustment_moves_the_stock_once,
            reservations_take_all_lines_or_none,
            reservations_are_idempotent_by_order,
            commit_makes_a_sale,
            restock_puts_a_sale_back,
            release_gives_stock_back,
            a_release_before_its_reservation_fences_it_off,
            a_reserve_replayed_after_its_release_holds_nothing,
            a_reserve_replayed_after_its_return_holds_nothing,
            movements_record_the_history,
            a_movements_cursor_goes_with_its_sku_only,
            only_the_order_module_moves_reservations,
            only_admins_touch_stock,
        );
    };
    (@cases $setup:path, $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (harness, _guard) = $setup().await;
                $crate::contract::$case(&harness).await;
            }
        )*
    };
}
