//! The fold's rules: the happy path, and transitions refused or repeated.

use super::*;
use kernel::Currency;

fn placed() -> (OrderState, DateTime<Utc>) {
    let now = Utc::now();
    let total = Money::new(1000, Currency::EUR);
    let event = OrderEvent::Placed {
        customer_id: Uuid::now_v7(),
        lines: vec![],
        total,
        card_last4: "4242".into(),
    };
    (
        OrderState::start(OrderId::generate(), &event, now).unwrap(),
        now,
    )
}

#[test]
fn the_happy_path_runs_pending_to_shipped() {
    let (mut state, now) = placed();
    let path = [
        (OrderEvent::StockReserved, OrderStatus::Reserved),
        (
            OrderEvent::PaymentAuthorized {
                payment_id: Uuid::now_v7(),
            },
            OrderStatus::Reserved,
        ),
        (OrderEvent::StockCommitted, OrderStatus::Reserved),
        (OrderEvent::PaymentCaptured, OrderStatus::Paid),
        (OrderEvent::Confirmed, OrderStatus::Confirmed),
        (OrderEvent::Shipped, OrderStatus::Shipped),
    ];
    for (event, status) in path {
        assert_eq!(state.accepts(&event), Ok(true), "{event:?}");
        state.apply(&event, now);
        assert_eq!(state.order.status, status);
    }
    assert_eq!(state.version, 7);
}

#[test]
fn illegal_transitions_are_refused_and_repeats_are_no_ops() {
    let (mut state, now) = placed();
    assert!(
        state.accepts(&OrderEvent::Shipped).is_err(),
        "not confirmed"
    );
    assert!(state.accepts(&OrderEvent::Confirmed).is_err(), "not paid");
    state.apply(&OrderEvent::StockReserved, now);
    assert_eq!(state.accepts(&OrderEvent::StockReserved), Ok(false));
    let failed = OrderEvent::Failed {
        reason: "no".into(),
    };
    state.apply(&failed, now);
    assert_eq!(state.order.status, OrderStatus::Failed);
    assert_eq!(
        state.accepts(&failed),
        Ok(false),
        "final: repeating is a no-op"
    );
    assert!(state.accepts(&OrderEvent::PaymentCaptured).is_err());
    assert!(
        state
            .accepts(&OrderEvent::Cancelled { reason: "x".into() })
            .is_ok()
    );
}

/// The projection is stored as JSON: the order's fields and the saga's
/// progress side by side, one flat object, as rows written before the
/// state embedded its `Order` were.
#[test]
fn the_stored_state_is_one_flat_object() {
    let (mut state, now) = placed();
    state.apply(&OrderEvent::StockReserved, now);
    let stored = serde_json::to_value(&state).unwrap();
    for key in [
        "id",
        "status",
        "total",
        "card_last4",
        "reserved",
        "version",
        "updated_at",
    ] {
        assert!(stored.get(key).is_some(), "{key} in {stored}");
    }
    assert!(stored.get("order").is_none(), "{stored}");
    let earlier = serde_json::json!({
        "id": state.order.id, "customer_id": state.order.customer_id, "status": "reserved",
        "reason": null, "lines": [], "total": state.order.total, "card_last4": "4242",
        "payment_id": null, "reserved": true, "authorized": false, "committed": false,
        "captured": false, "voided": false, "refunded": false, "released": false,
        "restocked": false, "version": 2, "created_at": now, "updated_at": now,
    });
    assert_eq!(
        serde_json::from_value::<OrderState>(earlier).unwrap(),
        state
    );
}

fn line(price_minor: i64, quantity: i32) -> Option<OrderLine> {
    let unit_price = Money::new(price_minor, Currency::EUR);
    Some(OrderLine {
        product_id: catalog_api::ProductId::from(Uuid::now_v7()),
        sku: catalog_api::Sku::parse("LINE-1").unwrap(),
        name: "Line".into(),
        unit_price,
        quantity,
        line_total: line_total(unit_price, quantity)?,
    })
}

/// An amount past what `i64` holds is refused, never saturated: the order
/// would charge another sum than its lines.
#[test]
fn totals_past_what_an_amount_holds_are_refused() {
    assert_eq!(line(1299, 3).unwrap().line_total.amount_minor(), 3897);
    assert!(line(i64::MAX / 2, 3).is_none());
    let big = line(i64::MAX / 2, 1).unwrap();
    let lines = [big.clone(), big.clone()];
    assert_eq!(total(&lines).unwrap().amount_minor(), i64::MAX - 1);
    let too_much = [big.clone(), big, line(2, 1).unwrap()];
    match total(&too_much) {
        Err(OrderError::Common(Failure::Validation(errors))) => {
            assert_eq!(errors[0].field, "cart");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_cart_of_nothing_to_pay_is_refused() {
    let free = |quantity: i32| OrderLine {
        product_id: catalog_api::ProductId::generate(),
        sku: catalog_api::Sku::parse("FREE-1").unwrap(),
        name: "Sticker".into(),
        unit_price: Money::new(0, Currency::EUR),
        quantity,
        line_total: Money::new(0, Currency::EUR),
    };
    let error = total(&[free(1), free(3)]).unwrap_err();
    assert!(
        matches!(&error, OrderError::Common(Failure::Validation(e)) if e[0].field == "cart"),
        "{error:?}"
    );
    let mut paid = free(1);
    paid.unit_price = Money::new(250, Currency::EUR);
    paid.line_total = paid.unit_price;
    assert_eq!(total(&[free(2), paid]).unwrap().amount_minor(), 250);
}
