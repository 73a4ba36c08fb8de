//! The contract suite: what every [`PaymentApi`] implementation must do.
//! The harness's provider must be the sandbox (its test cards decide).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use kernel::{CallContext, Currency, Failure, Money, OrderId};
use uuid::Uuid;

use crate::{AuthorizePayment, PaymentApi, PaymentError, PaymentMethod, PaymentStatus, Tokenize};

/// Sandbox card numbers.
const SUCCEEDS: &str = "4242424242424242";
const DECLINED: &str = "4000000000000002";

/// What a contract case runs against.
pub struct Harness {
    /// The implementation under test.
    pub api: Arc<dyn PaymentApi>,
    /// The shop's own modules (the `service` role).
    pub service: CallContext,
    /// A customer, `customer_id`.
    pub customer: CallContext,
    /// That customer's user id (the payments' owner).
    pub customer_id: Uuid,
    /// A customer who owns none of the payments (sees 404s).
    pub stranger: CallContext,
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

async fn method(h: &Harness, card: &str) -> PaymentMethod {
    h.api
        .tokenize(
            &h.service,
            Tokenize {
                card_number: card.to_owned(),
            },
        )
        .await
        .unwrap()
}

async fn authorize(
    h: &Harness,
    order: OrderId,
    minor: i64,
    card: &str,
) -> Result<crate::Payment, PaymentError> {
    let payment_method = method(h, card).await;
    h.api
        .authorize(
            &h.service,
            AuthorizePayment {
                order_id: order,
                customer_id: h.customer_id,
                amount: eur(minor),
                payment_method,
            },
        )
        .await
}

fn kinds(payment: &crate::Payment) -> Vec<&str> {
    payment.ledger.iter().map(|e| e.kind.as_str()).collect()
}

/// Only the token and the last four digits come back; a non-number is 422.
pub async fn tokenize_keeps_only_the_last_four(h: &Harness) {
    let method = method(h, "4242 4242 4242 4242").await;
    assert_eq!(method.card_last4, "4242");
    assert!(!method.token.contains(SUCCEEDS));
    let error = h
        .api
        .tokenize(
            &h.service,
            Tokenize {
                card_number: "12ab".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, PaymentError::Common(Failure::Validation(_))),
        "{error:?}"
    );
}

/// The same order authorizes once, whatever the repeats; another amount
/// or another card for it is a conflict.
pub async fn authorize_is_idempotent_by_order(h: &Harness) {
    let order = OrderId::generate();
    let first = authorize(h, order, 1299, SUCCEEDS).await.unwrap();
    assert_eq!(first.status, PaymentStatus::Authorized);
    assert_eq!(first.card_last4, "4242");
    let again = authorize(h, order, 1299, SUCCEEDS).await.unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(kinds(&again), ["authorized"]);
    assert_eq!(
        authorize(h, order, 1300, SUCCEEDS).await.unwrap_err(),
        PaymentError::Conflict
    );
    // Another card (the same card tokenized again is the same payment).
    assert_eq!(
        authorize(h, order, 1299, DECLINED).await.unwrap_err(),
        PaymentError::Conflict
    );
}

/// A decline is recorded with the provider's reason, and answered again.
pub async fn declines_are_recorded(h: &Harness) {
    let order = OrderId::generate();
    for _ in 0..2 {
        assert_eq!(
            authorize(h, order, 500, DECLINED).await.unwrap_err(),
            PaymentError::Declined("card_declined".into())
        );
    }
    let payment = h.api.payment_for_order(&h.service, order).await.unwrap();
    assert_eq!(payment.status, PaymentStatus::Declined);
    assert_eq!(payment.decline_code.as_deref(), Some("card_declined"));
    assert_eq!(kinds(&payment), ["declined"]);
}

/// Capture, refund and void each move once; other moves are refused.
pub async fn capture_void_and_refund_move_once(h: &Harness) {
    let order = OrderId::generate();
    authorize(h, order, 700, SUCCEEDS).await.unwrap();
    for _ in 0..2 {
        let captured = h.api.capture(&h.service, order).await.unwrap();
        assert_eq!(captured.status, PaymentStatus::Captured);
    }
    assert_eq!(
        h.api.void(&h.service, order).await.unwrap_err(),
        PaymentError::InvalidTransition(PaymentStatus::Captured)
    );
    for _ in 0..2 {
        let refunded = h.api.refund(&h.service, order).await.unwrap();
        assert_eq!(refunded.status, PaymentStatus::Refunded);
        assert_eq!(kinds(&refunded), ["authorized", "captured", "refunded"]);
    }

    let voided_order = OrderId::generate();
    authorize(h, voided_order, 700, SUCCEEDS).await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            h.api.void(&h.service, voided_order).await.unwrap().status,
            PaymentStatus::Voided
        );
    }
    assert_eq!(
        h.api.capture(&h.service, voided_order).await.unwrap_err(),
        PaymentError::InvalidTransition(PaymentStatus::Voided)
    );
    assert_eq!(
        authorize(h, voided_order, 700, SUCCEEDS).await.unwrap_err(),
        PaymentError::InvalidTransition(PaymentStatus::Voided),
        "a voided payment is never authorized again"
    );
    assert_eq!(
        h.api.refund(&h.service, voided_order).await.unwrap_err(),
        PaymentError::InvalidTransition(PaymentStatus::Voided)
    );
    let unknown = OrderId::generate();
    assert_eq!(
        h.api.capture(&h.service, unknown).await.unwrap_err(),
        PaymentError::NotFound
    );
}

/// A void that finds no payment (the saga turned back while its
/// authorization was still on its way from another process) answers "no
/// payment", and bars the order: the authorization, when it arrives, is
/// refused as for a voided payment, so no hold is made that nothing would
/// release.
pub async fn a_void_before_the_authorization_bars_it(h: &Harness) {
    let order = OrderId::generate();
    for _ in 0..2 {
        assert_eq!(
            h.api.void(&h.service, order).await.unwrap_err(),
            PaymentError::NotFound
        );
    }
    assert_eq!(
        authorize(h, order, 700, SUCCEEDS).await.unwrap_err(),
        PaymentError::InvalidTransition(PaymentStatus::Voided),
        "an authorization arriving after its order's void"
    );
    assert_eq!(
        h.api
            .payment_for_order(&h.customer, order)
            .await
            .unwrap_err(),
        PaymentError::NotFound,
        "nothing was opened"
    );
    // Other orders are not barred.
    let other = OrderId::generate();
    let payment = authorize(h, other, 700, SUCCEEDS).await.unwrap();
    assert_eq!(payment.status, PaymentStatus::Authorized);
}

/// Owners read their payments; nobody else does; customers move nothing.
pub async fn customers_read_their_own_payments_only(h: &Harness) {
    let order = OrderId::generate();
    let payment = authorize(h, order, 900, SUCCEEDS).await.unwrap();
    assert_eq!(
        h.api.payment(&h.customer, payment.id).await.unwrap().id,
        payment.id
    );
    assert_eq!(
        h.api
            .payment_for_order(&h.customer, order)
            .await
            .unwrap()
            .id,
        payment.id
    );
    assert_eq!(
        h.api.payment(&h.stranger, payment.id).await.unwrap_err(),
        PaymentError::NotFound
    );
    assert_eq!(
        h.api.capture(&h.customer, order).await.unwrap_err(),
        PaymentError::Common(Failure::Forbidden)
    );
    assert_eq!(
        h.api
            .capture(&CallContext::background(), order)
            .await
            .unwrap_err(),
        PaymentError::Common(Failure::Unauthenticated)
    );
}

/// Generates one `#[tokio::test]` per contract case for a setup function
/// returning `(Harness, guard)`.
#[macro_export]
macro_rules! payment_contract_suite {
    ($setup:path) => {
        $crate::payment_contract_suite!(@cases $setup,
            tokenize_keeps_only_the_last_four,
            authorize_is_idempotent_by_order,
            declines_are_recorded,
            capture_void_and_refund_move_once,
            a_void_before_the_authorization_bars_it,
            customers_read_their_own_payments_only,
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
