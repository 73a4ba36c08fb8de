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

/// Authorizes 7.00 EUR for `order` (the success card); the id the
/// provider (the only authorization it holds) knows it by.
async fn authorized(h: &Harness, provider: &str, order: OrderId) -> String {
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
    let all: Vec<Value> = crate::helpers::http()
        .get(format!("{provider}v1/authorizations"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    all[0]["id"].as_str().unwrap().to_owned()
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
    let id = authorized(&h, &provider, order).await;
    let id = id.as_str();
    // Captured at the provider only, as if its answer had been lost.
    let client = crate::helpers::http();
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

/// A provider whose first authorization is held until the test releases
/// it: before it reaches the provider (`before`), or after the provider
/// made the hold. While it is held, another authorization with the same
/// key is, before, "still running" (unavailable), as the sandbox answers
/// it; after, answered by the provider.
struct HeldAuthorization {
    inner: payment::provider::HttpProvider,
    before: bool,
    first: std::sync::atomic::AtomicBool,
    reached: tokio::sync::Notify,
    release: tokio::sync::Notify,
    /// The next void fails (unavailable) when set.
    failing_void: std::sync::atomic::AtomicBool,
    /// When set, the second authorization (a void learning the first's
    /// outcome) is held until `second_release`, then fails (unavailable).
    holding_second: std::sync::atomic::AtomicBool,
    second_reached: tokio::sync::Notify,
    second_release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl payment::provider::PaymentProvider for HeldAuthorization {
    async fn tokenize(
        &self,
        card_number: &str,
    ) -> Result<payment::provider::ProviderPaymentMethod, payment::provider::ProviderError> {
        self.inner.tokenize(card_number).await
    }

    async fn authorize(
        &self,
        key: &str,
        amount: Money,
        payment_method: &str,
    ) -> Result<payment::provider::ProviderAuthorization, payment::provider::ProviderError> {
        use std::sync::atomic::Ordering;
        if !self.first.swap(false, Ordering::SeqCst) {
            if self.holding_second.swap(false, Ordering::SeqCst) {
                self.second_reached.notify_one();
                self.second_release.notified().await;
                return Err(payment::provider::ProviderError::Unavailable(
                    "no answer in time".into(),
                ));
            }
            if self.before {
                return Err(payment::provider::ProviderError::Unavailable(
                    "the same request is still running".into(),
                ));
            }
            return self.inner.authorize(key, amount, payment_method).await;
        }
        if self.before {
            self.reached.notify_one();
            self.release.notified().await;
            self.inner.authorize(key, amount, payment_method).await
        } else {
            let made = self.inner.authorize(key, amount, payment_method).await;
            self.reached.notify_one();
            self.release.notified().await;
            made
        }
    }

    async fn capture(
        &self,
        id: &str,
    ) -> Result<payment::provider::ProviderAuthorization, payment::provider::ProviderError> {
        self.inner.capture(id).await
    }

    async fn void(
        &self,
        id: &str,
    ) -> Result<payment::provider::ProviderAuthorization, payment::provider::ProviderError> {
        if self
            .failing_void
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(payment::provider::ProviderError::Unavailable(
                "the call failed".into(),
            ));
        }
        self.inner.void(id).await
    }

    async fn refund(
        &self,
        id: &str,
    ) -> Result<payment::provider::ProviderAuthorization, payment::provider::ProviderError> {
        self.inner.refund(id).await
    }

    async fn authorization(
        &self,
        id: &str,
    ) -> Result<payment::provider::ProviderAuthorization, payment::provider::ProviderError> {
        self.inner.authorization(id).await
    }
}

/// The payment module over a [`HeldAuthorization`] provider in front of a
/// sandbox; the sandbox's base URL, the pool and the guards.
async fn held(
    before: bool,
) -> (
    payment::PaymentModule,
    Arc<HeldAuthorization>,
    String,
    db::Pool,
    Guard,
) {
    let db = test_database().await;
    let settings = test_settings(Some(db.url()), &[]);
    let pool =
        app::database::module_pool(&settings, app::modules::ModuleName::Payment, db.url()).unwrap();
    let (server, port) = payment_sandbox::server("127.0.0.1", 0, 1).unwrap();
    let provider = server.handle();
    tokio::spawn(server);
    let base = format!("http://127.0.0.1:{port}/");
    let held = Arc::new(HeldAuthorization {
        inner: payment::provider::HttpProvider::new(
            crate::helpers::http(),
            url::Url::parse(&base).unwrap(),
            crate::helpers::policy("payment_provider"),
        ),
        before,
        first: true.into(),
        reached: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
        failing_void: false.into(),
        holding_second: false.into(),
        second_reached: tokio::sync::Notify::new(),
        second_release: tokio::sync::Notify::new(),
    });
    let module = payment::PaymentModule::new(pool.clone(), held.clone());
    (module, held, base, pool, Guard { _db: db, provider })
}

/// Every authorization the sandbox holds, with its status.
async fn at_provider(base: &str) -> Vec<String> {
    let all: Vec<Value> = crate::helpers::http()
        .get(format!("{base}v1/authorizations"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    all.iter()
        .map(|a| a["status"].as_str().unwrap().to_owned())
        .collect()
}

/// Spawns the authorization of `order`, as a late call would run it.
fn spawn_authorization(
    module: &payment::PaymentModule,
    order: OrderId,
) -> tokio::task::JoinHandle<Result<payment_api::Payment, PaymentError>> {
    use payment_api::PaymentApi as _;
    let module = module.clone();
    tokio::spawn(async move {
        let service = kernel::CallContext::background().with_caller(Caller::service());
        let payment_method = module
            .tokenize(
                &service,
                Tokenize {
                    card_number: payment_sandbox::cards::SUCCEEDS.to_owned(),
                },
            )
            .await?;
        module
            .authorize(
                &service,
                AuthorizePayment {
                    order_id: order,
                    customer_id: Uuid::now_v7(),
                    amount: Money::new(1200, Currency::EUR),
                    payment_method,
                },
            )
            .await
    })
}

/// The narrowest race of a late authorization: its payment was opened
/// just after a void looked for it and found none (so the void answered
/// "no payment"), and the provider made the hold. The void's bar, written
/// before it looked, stops the authorization's record, and the module
/// releases the hold itself: nothing else would (the order turned back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_that_meets_the_bar_of_a_void_releases_its_hold() {
    use diesel_async::RunQueryDsl as _;
    let (module, held, base, pool, _guard) = held(false).await;
    let order = OrderId::generate();
    let late = spawn_authorization(&module, order);
    held.reached.notified().await;
    assert_eq!(at_provider(&base).await, ["authorized"], "the hold is made");
    // The void's bar, as written when its read missed the opening.
    diesel::sql_query("INSERT INTO voided_orders (order_id) VALUES ($1)")
        .bind::<diesel::sql_types::Uuid, _>(order.as_uuid())
        .execute(&mut db::connection(&pool, "payment").await.unwrap())
        .await
        .unwrap();
    held.release.notify_one();
    assert_eq!(
        late.await.unwrap().unwrap_err(),
        PaymentError::InvalidTransition(PaymentStatus::Voided)
    );
    assert_eq!(at_provider(&base).await, ["voided"], "the hold is released");
    let service = kernel::CallContext::background().with_caller(Caller::service());
    use payment_api::PaymentApi as _;
    let payment = module.payment_for_order(&service, order).await.unwrap();
    assert_eq!(payment.status, PaymentStatus::Voided);
    let reasons: Vec<_> = payment
        .ledger
        .iter()
        .map(|l| (l.kind.as_str(), l.reason.as_deref()))
        .collect();
    assert_eq!(
        reasons,
        [("voided", Some("order_voided_before_authorization"))]
    );
    // The saga's void, asked again, finds it voided.
    assert_eq!(
        module.void(&service, order).await.unwrap().status,
        PaymentStatus::Voided
    );
}

/// A void that gives up an authorization whose outcome it cannot learn
/// (the provider still working on it) records it voided, "outcome
/// unknown". When that authorization's answer then comes back with a hold,
/// the hold is released at once rather than left to the card network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_given_up_by_a_void_releases_its_hold_when_it_answers() {
    use payment_api::PaymentApi as _;
    let (module, held, base, _pool, _guard) = held(true).await;
    let order = OrderId::generate();
    let late = spawn_authorization(&module, order);
    held.reached.notified().await;
    let service = kernel::CallContext::background().with_caller(Caller::service());
    let voided = module.void(&service, order).await.unwrap();
    assert_eq!(voided.status, PaymentStatus::Voided);
    assert_eq!(voided.decline_code, None, "voided, not declined");
    assert_eq!(
        voided.ledger[0].reason.as_deref(),
        Some("authorization_outcome_unknown")
    );
    assert!(at_provider(&base).await.is_empty(), "no hold yet");
    held.release.notify_one();
    assert_eq!(
        late.await.unwrap().unwrap_err(),
        PaymentError::InvalidTransition(PaymentStatus::Voided)
    );
    assert_eq!(at_provider(&base).await, ["voided"], "the hold is released");
}

/// A void that cannot learn an authorization's outcome gives it up; if
/// the authorization records its hold in the moment between the void's
/// question and its record, the void releases that hold as any other,
/// rather than answer "done" with the payment still authorized (the saga
/// would close the order with the hold left on the card).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_void_that_gives_up_just_as_the_authorization_answers_releases_the_hold() {
    use payment_api::PaymentApi as _;
    let (module, held, base, _pool, _guard) = held(false).await;
    held.holding_second
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let order = OrderId::generate();
    let late = spawn_authorization(&module, order);
    held.reached.notified().await;
    let service = kernel::CallContext::background().with_caller(Caller::service());
    let void = {
        let (module, service) = (module.clone(), service.clone());
        tokio::spawn(async move { module.void(&service, order).await })
    };
    // The void asks the provider for the outcome; before it hears "no
    // answer", the authorization records its hold.
    held.second_reached.notified().await;
    held.release.notify_one();
    assert_eq!(
        late.await.unwrap().unwrap().status,
        PaymentStatus::Authorized
    );
    held.second_release.notify_one();
    let voided = void.await.unwrap().unwrap();
    assert_eq!(voided.status, PaymentStatus::Voided, "{voided:?}");
    assert_eq!(at_provider(&base).await, ["voided"], "the hold is released");
}

/// Bars are kept a week, far beyond any caller's deadline, then forgotten
/// (the module's hourly job): the table does not grow for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bars_older_than_a_week_are_forgotten() {
    use diesel_async::RunQueryDsl as _;
    use payment_api::PaymentApi as _;
    let (module, _held, _base, pool, _guard) = held(false).await;
    let service = kernel::CallContext::background().with_caller(Caller::service());
    let (old, young) = (OrderId::generate(), OrderId::generate());
    for order in [old, young] {
        assert_eq!(
            module.void(&service, order).await.unwrap_err(),
            PaymentError::NotFound
        );
    }
    diesel::sql_query(
        "UPDATE voided_orders SET voided_at = now() - interval '8 days' WHERE order_id = $1",
    )
    .bind::<diesel::sql_types::Uuid, _>(old.as_uuid())
    .execute(&mut db::connection(&pool, "payment").await.unwrap())
    .await
    .unwrap();
    assert_eq!(module.forget_old_bars().await.unwrap(), 1);
    assert_eq!(module.forget_old_bars().await.unwrap(), 0);
    let barred = |order| spawn_authorization(&module, order);
    assert_eq!(
        barred(young).await.unwrap().unwrap_err(),
        PaymentError::InvalidTransition(PaymentStatus::Voided),
        "a young bar stays"
    );
}

/// An authorization that meets the bar while the provider does not answer
/// its void keeps its hold for the moment, the payment still
/// `authorizing`: nothing else will ask (the saga turned back). The
/// module's minute job settles such payments again, and the hold is
/// released then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_the_bar_could_not_release_at_once_is_released_by_the_upkeep() {
    use diesel_async::RunQueryDsl as _;
    use payment_api::PaymentApi as _;
    let (module, held, base, pool, _guard) = held(false).await;
    let order = OrderId::generate();
    let late = spawn_authorization(&module, order);
    held.reached.notified().await;
    diesel::sql_query("INSERT INTO voided_orders (order_id) VALUES ($1)")
        .bind::<diesel::sql_types::Uuid, _>(order.as_uuid())
        .execute(&mut db::connection(&pool, "payment").await.unwrap())
        .await
        .unwrap();
    held.failing_void
        .store(true, std::sync::atomic::Ordering::SeqCst);
    held.release.notify_one();
    assert!(late.await.unwrap().is_err(), "its void failed");
    assert_eq!(
        at_provider(&base).await,
        ["authorized"],
        "the hold is still there"
    );
    let service = kernel::CallContext::background().with_caller(Caller::service());
    assert_eq!(
        module
            .payment_for_order(&service, order)
            .await
            .unwrap()
            .status,
        PaymentStatus::Authorizing
    );

    assert_eq!(
        module
            .release_barred_holds(std::time::Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    assert_eq!(at_provider(&base).await, ["voided"], "the hold is released");
    assert_eq!(
        module
            .payment_for_order(&service, order)
            .await
            .unwrap()
            .status,
        PaymentStatus::Voided
    );
    assert_eq!(
        module
            .release_barred_holds(std::time::Duration::ZERO)
            .await
            .unwrap(),
        0,
        "nothing left"
    );
}

/// A void that learns a barred authorization's hold and cannot release it
/// (the provider does not answer the void) does not give the payment up as
/// "outcome unknown", which would leave the hold on the card with nothing
/// to release it: the payment stays `authorizing` and barred, the void
/// answers unavailable (the saga asks again), and the minute job releases
/// the hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_void_that_cannot_release_a_barred_hold_leaves_it_to_be_released() {
    use diesel_async::RunQueryDsl as _;
    use payment_api::PaymentApi as _;
    let (module, held, base, pool, _guard) = held(false).await;
    let order = OrderId::generate();
    let late = spawn_authorization(&module, order);
    held.reached.notified().await;
    diesel::sql_query("INSERT INTO voided_orders (order_id) VALUES ($1)")
        .bind::<diesel::sql_types::Uuid, _>(order.as_uuid())
        .execute(&mut db::connection(&pool, "payment").await.unwrap())
        .await
        .unwrap();
    // The late authorization's caller is gone before it hears the hold.
    late.abort();
    drop(late.await);
    held.release.notify_one();
    assert_eq!(at_provider(&base).await, ["authorized"]);

    let service = kernel::CallContext::background().with_caller(Caller::service());
    held.failing_void
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let error = module.void(&service, order).await.unwrap_err();
    assert!(error.is_transient(), "asked again: {error:?}");
    assert_eq!(
        module
            .payment_for_order(&service, order)
            .await
            .unwrap()
            .status,
        PaymentStatus::Authorizing,
        "not given up"
    );
    assert_eq!(
        module
            .release_barred_holds(std::time::Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    assert_eq!(at_provider(&base).await, ["voided"], "the hold is released");
    assert_eq!(
        module.void(&service, order).await.unwrap().status,
        PaymentStatus::Voided,
        "the saga's void, asked again"
    );
}

/// An authorization asked again while its first attempt's outcome is
/// unknown (the hold made, the answer lost), with the same card tokenized
/// anew, replays the first hold: the provider is asked with the token
/// first stored (another body under the same idempotency key is refused,
/// and was recorded as a decline with the hold left on the card). Another
/// card is a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_asked_again_with_a_new_token_for_its_card_replays_the_hold() {
    use payment_api::PaymentApi as _;
    let (module, held, base, _pool, _guard) = held(false).await;
    let service = kernel::CallContext::background().with_caller(Caller::service());
    let (order, customer) = (OrderId::generate(), Uuid::now_v7());
    let request = |payment_method| AuthorizePayment {
        order_id: order,
        customer_id: customer,
        amount: Money::new(1200, Currency::EUR),
        payment_method,
    };
    let tokenize = |card: &str| {
        let (module, service, card) = (module.clone(), service.clone(), card.to_owned());
        async move {
            module
                .tokenize(&service, Tokenize { card_number: card })
                .await
                .unwrap()
        }
    };
    let first = {
        let (module, service) = (module.clone(), service.clone());
        let request = request(tokenize(payment_sandbox::cards::SUCCEEDS).await);
        tokio::spawn(async move { module.authorize(&service, request).await })
    };
    held.reached.notified().await;
    // Its caller is gone before it hears the hold.
    first.abort();
    drop(first.await);
    held.release.notify_one();
    assert_eq!(at_provider(&base).await, ["authorized"]);

    let again = tokenize(payment_sandbox::cards::SUCCEEDS).await;
    let payment = module.authorize(&service, request(again)).await.unwrap();
    assert_eq!(payment.status, PaymentStatus::Authorized);
    assert_eq!(at_provider(&base).await, ["authorized"], "one hold");

    let other = tokenize(payment_sandbox::cards::DECLINED).await;
    assert_eq!(
        module
            .authorize(&service, request(other))
            .await
            .unwrap_err(),
        PaymentError::Conflict
    );
}

/// A capture meeting a hold the provider released without this module's
/// record (a void whose answer was lost, or one made by hand at the
/// provider) records the void and answers 409 `voided`, not a decline of
/// the card (402, `invalid_state`), which the saga would tell the customer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_meeting_a_hold_voided_at_the_provider_records_the_void() {
    let (h, _guard, provider) = in_process_with_provider().await;
    let order = OrderId::generate();
    let id = authorized(&h, &provider, order).await;
    let client = crate::helpers::http();
    let voided = client
        .post(format!("{provider}v1/authorizations/{id}/void"))
        .send()
        .await
        .unwrap();
    assert_eq!(voided.status(), 200);

    for _ in 0..2 {
        assert_eq!(
            h.api.capture(&h.service, order).await.unwrap_err(),
            PaymentError::InvalidTransition(PaymentStatus::Voided)
        );
    }
    let payment = h.api.payment_for_order(&h.customer, order).await.unwrap();
    assert_eq!(payment.status, PaymentStatus::Voided);
    let kinds: Vec<&str> = payment.ledger.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["authorized", "voided"]);
    assert_eq!(
        h.api.void(&h.service, order).await.unwrap().status,
        PaymentStatus::Voided,
        "the saga's void finds it done"
    );
}
