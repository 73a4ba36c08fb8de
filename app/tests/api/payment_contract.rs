//! The payment contract suite on both implementations: the module in
//! process and its HTTP client against a running shop, both in front of a
//! sandbox provider on a real socket.

use std::sync::Arc;

use kernel::{Caller, Currency, Money, OrderId, Role};
use payment_api::contract::Harness;
use payment_api::{AuthorizePayment, PaymentError, PaymentStatus, Tokenize};
use serde_json::Value;
use uuid::Uuid;

use crate::checkout::shop::customer_token;
use crate::helpers::{caller, spawn_app, test_database, test_settings};

struct Guard {
    _db: testkit::TestDatabase,
    provider: actix_web::dev::ServerHandle,
}

impl Drop for Guard {
    fn drop(&mut self) {
        drop(self.provider.stop(false));
    }
}

async fn in_process() -> (Harness, Guard) {
    let (harness, guard, _) = in_process_with_provider().await;
    (harness, guard)
}

/// [`in_process`], and the sandbox provider's base URL.
async fn in_process_with_provider() -> (Harness, Guard, String) {
    let db = test_database().await;
    let settings = test_settings(Some(db.url()), &[]);
    let pool =
        app::database::module_pool(&settings, app::modules::ModuleName::Payment, db.url()).unwrap();
    let (server, port) = payment_sandbox::server("127.0.0.1", 0, 1).unwrap();
    let provider = server.handle();
    tokio::spawn(server);
    let adapter = payment::provider::HttpProvider::new(
        crate::helpers::http(),
        url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap(),
        crate::helpers::policy("payment_provider"),
    );
    let customer_id = Uuid::now_v7();
    let harness = Harness {
        api: Arc::new(payment::PaymentModule::new(pool, Arc::new(adapter))),
        service: kernel::CallContext::background().with_caller(Caller::service()),
        customer: kernel::CallContext::background().with_caller(Caller {
            user_id: customer_id,
            roles: vec![Role::Customer],
        }),
        customer_id,
        stranger: caller(Role::Customer),
    };
    let base = format!("http://127.0.0.1:{port}/");
    (harness, Guard { _db: db, provider }, base)
}

async fn over_http() -> (Harness, crate::helpers::TestApp) {
    let app = spawn_app().await;
    let client = payment_api::client::PaymentClient::new(
        crate::helpers::http(),
        url::Url::parse(&app.address).unwrap(),
        crate::helpers::policy("payment"),
    );
    let service = app::compose::service_tokens(&app.settings)
        .unwrap()
        .token()
        .unwrap();
    let customer_id = Uuid::now_v7();
    let bearer = |token: String| kernel::CallContext::background().with_bearer_token(token);
    let harness = Harness {
        api: Arc::new(client),
        service: bearer(service),
        customer: bearer(customer_token(&app.settings, customer_id)),
        customer_id,
        stranger: bearer(app.token(&[Role::Customer])),
    };
    (harness, app)
}

mod local {
    payment_api::payment_contract_suite!(super::in_process);
}

mod http {
    payment_api::payment_contract_suite!(super::over_http);
}

/// A capture the provider made but whose answer never came back (a
/// timeout, a crash before its record), then a void, as compensation asks
/// once the order turned back: the provider refuses to void a captured
/// hold; the module learns the capture from the provider, records it and
/// answers "captured", which the saga refunds, instead of a refusal it
/// would meet on every retry while the customer stays charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_void_after_a_capture_whose_answer_was_lost_records_the_capture() {
    let (h, _guard, provider) = in_process_with_provider().await;
    let order = OrderId::generate();
    let payment_method = h
        .api
        .tokenize(
            &h.service,
            Tokenize {
                card_number: payment_sandbox::cards::SUCCEEDS.to_owned(),
            },
        )
        .await
        .unwrap();
    let request = AuthorizePayment {
        order_id: order,
        customer_id: h.customer_id,
        amount: Money::new(700, Currency::EUR),
        payment_method,
    };
    h.api.authorize(&h.service, request).await.unwrap();
    // Captured at the provider only, as if its answer had been lost.
    let client = crate::helpers::http();
    let all: Vec<Value> = client
        .get(format!("{provider}v1/authorizations"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    let id = all[0]["id"].as_str().unwrap();
    let captured = client
        .post(format!("{provider}v1/authorizations/{id}/capture"))
        .send()
        .await
        .unwrap();
    assert_eq!(captured.status(), 200);

    for _ in 0..2 {
        assert_eq!(
            h.api.void(&h.service, order).await.unwrap_err(),
            PaymentError::InvalidTransition(PaymentStatus::Captured),
            "the capture the provider made, not a refusal"
        );
    }
    let payment = h.api.payment_for_order(&h.customer, order).await.unwrap();
    assert_eq!(payment.status, PaymentStatus::Captured);
    let refunded = h.api.refund(&h.service, order).await.unwrap();
    assert_eq!(refunded.status, PaymentStatus::Refunded);
    let kinds: Vec<&str> = refunded.ledger.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["authorized", "captured", "refunded"]);
    let at_provider: Value = client
        .get(format!("{provider}v1/authorizations/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(at_provider["status"], "refunded", "{at_provider}");
}

/// A capture starts from the authorization this process just recorded,
/// without reading the payment again (the statements it saves are counted
/// by `scripts/bench/checkout`, not here). What this shows is that the
/// shortcut answers as the read would: when the hold was voided meanwhile
/// by another instance, the provider refuses the capture and the answer is
/// the payment as recorded (voided), with nothing captured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_from_memory_meets_a_void_made_elsewhere() {
    let db = test_database().await;
    let settings = test_settings(Some(db.url()), &[]);
    let pool =
        app::database::module_pool(&settings, app::modules::ModuleName::Payment, db.url()).unwrap();
    let (server, port) = payment_sandbox::server("127.0.0.1", 0, 1).unwrap();
    let provider_handle = server.handle();
    tokio::spawn(server);
    let provider = format!("http://127.0.0.1:{port}/");
    let adapter = Arc::new(payment::provider::HttpProvider::new(
        crate::helpers::http(),
        url::Url::parse(&provider).unwrap(),
        crate::helpers::policy("payment_provider"),
    ));
    let here = payment::PaymentModule::new(pool.clone(), adapter.clone());
    let elsewhere = payment::PaymentModule::new(pool, adapter);
    let service = kernel::CallContext::background().with_caller(Caller::service());
    let authorize = |order: OrderId| {
        let (here, service) = (&here, &service);
        async move {
            let payment_method = here
                .tokenize(
                    service,
                    Tokenize {
                        card_number: payment_sandbox::cards::SUCCEEDS.to_owned(),
                    },
                )
                .await
                .unwrap();
            let request = AuthorizePayment {
                order_id: order,
                customer_id: Uuid::now_v7(),
                amount: Money::new(900, Currency::EUR),
                payment_method,
            };
            here.authorize(service, request).await.unwrap();
        }
    };
    use payment_api::PaymentApi as _;

    // The usual way: authorized, then captured here.
    let usual = OrderId::generate();
    authorize(usual).await;
    let captured = here.capture(&service, usual).await.unwrap();
    assert_eq!(captured.status, PaymentStatus::Captured);
    let kinds: Vec<&str> = captured.ledger.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["authorized", "captured"]);

    // Voided by another instance between the two.
    let voided = OrderId::generate();
    authorize(voided).await;
    elsewhere.void(&service, voided).await.unwrap();
    assert_eq!(
        here.capture(&service, voided).await.unwrap_err(),
        PaymentError::InvalidTransition(PaymentStatus::Voided)
    );
    let all: Vec<Value> = crate::helpers::http()
        .get(format!("{provider}v1/authorizations"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let statuses: Vec<&str> = all.iter().filter_map(|a| a["status"].as_str()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "captured").count(),
        1,
        "{all:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == "voided").count(),
        1,
        "{all:?}"
    );
    provider_handle.stop(false).await;
}
