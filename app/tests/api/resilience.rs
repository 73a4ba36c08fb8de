//! Resilience of calls to other modules under injected faults, on real
//! sockets: a fault proxy between the caller and a real shop. The database
//! failing: `database_faults`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use catalog_api::client::CatalogClient;
use catalog_api::{CatalogApi, CatalogError, ProductId};
use kernel::{CallContext, Degradation, Failure, Role};
use resilience::State;
use serde_json::{Value, json};
use testkit::fault::{Fault, FaultProxy};

use app::compose::Dependency;
use app::modules::ModuleName;

use crate::helpers::{assert_problem, product_json, spawn_app, spawn_app_with, test_settings};

/// The catalog's policy with `extra` overrides (env-var form).
fn catalog_policy(extra: &[(&str, &str)]) -> Arc<resilience::Policy> {
    app::compose::Policies::new(&test_settings(None, extra))
        .get(Dependency::Module(ModuleName::Catalog))
}

fn client(proxy: &FaultProxy, policy: Arc<resilience::Policy>) -> CatalogClient {
    let base = url::Url::parse(&format!("http://127.0.0.1:{}", proxy.port())).unwrap();
    CatalogClient::new(crate::helpers::http(), base, policy)
}

fn port_of(app: &crate::helpers::TestApp) -> u16 {
    url::Url::parse(&app.address).unwrap().port().unwrap()
}

/// A module's load shedding is its answer too: an extracted catalog whose
/// searches find no turn refuses them (503 `dependency_overloaded`); the
/// gateway passes each refusal back once, without retrying it after its
/// `Retry-After`, and its breaker, which would open after three failures,
/// stays closed for every other catalog call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_shedding_load_is_answered_once_and_never_opens_the_breaker() {
    let catalog = spawn_app_with(&[
        ("APP__CATALOG__SEARCH__MAX_CONCURRENT", "1"),
        ("APP__CATALOG__SEARCH__QUEUE_TIMEOUT_MS", "50"),
        // The first search waits behind the lock until the test lets go.
        ("APP__DATABASE__STATEMENT_TIMEOUT_MS", "120000"),
    ])
    .await;
    // Its other modules trade events with the catalog: through the broker.
    let gateway = crate::events::app_on(
        "rabbitmq",
        &[
            ("APP__MODULES__CATALOG__MODE", "remote"),
            ("APP__MODULES__CATALOG__URL", catalog.address.as_str()),
            ("APP__RESILIENCE__CATALOG__BREAKER__MINIMUM_CALLS", "3"),
            ("APP__RESILIENCE__CATALOG__BREAKER__WINDOW_SIZE", "3"),
            ("APP__RESILIENCE__CATALOG__BREAKER__WAIT_OPEN_MS", "60000"),
        ],
    )
    .await;
    let search = "/api/v1/products?q=blue%20teapot";

    // One search takes the catalog's only turn and waits behind a lock.
    let mut holder = crate::database_faults::lock_table(&catalog, "catalog.products").await;
    let first = {
        let request = catalog.client.get(catalog.url(search));
        tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
    };
    crate::database_faults::waiting_on_the_lock(&mut holder, 1).await;

    let refusals = || async {
        let metrics = catalog.get("/metrics").await.text().await.unwrap();
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("catalog_searches_refused_total "))
            .map_or(0.0, |v| v.trim().parse::<f64>().unwrap())
    };
    let before = refusals().await;
    for _ in 0..4 {
        let refused = gateway.get(search).await;
        assert_eq!(refused.headers()["retry-after"], "1");
        assert_problem(refused, 503, "dependency_overloaded").await;
    }
    assert_eq!(
        refusals().await - before,
        4.0,
        "each refusal reached the catalog once"
    );
    let metrics = gateway.get("/metrics").await.text().await.unwrap();
    let line = r#"remote_calls_total{dependency="catalog",outcome="refused"} 4"#;
    assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    let ready: Value = gateway.ready().await.json().await.unwrap();
    assert_eq!(ready["checks"]["module:catalog"]["status"], "up", "{ready}");

    crate::database_faults::release(holder).await;
    assert_eq!(first.await.unwrap(), 200, "the first search ends");
    assert_eq!(gateway.get(search).await.status(), 200);
    assert_eq!(gateway.get("/api/v1/products").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_fails_fast_then_lets_a_trial_through_and_closes() {
    let app = spawn_app().await;
    let proxy = FaultProxy::start(port_of(&app)).await;
    let policy = catalog_policy(&[
        ("APP__RESILIENCE__CATALOG__MAX_RETRIES", "0"),
        ("APP__RESILIENCE__CATALOG__BREAKER__WINDOW_SIZE", "4"),
        ("APP__RESILIENCE__CATALOG__BREAKER__MINIMUM_CALLS", "4"),
        ("APP__RESILIENCE__CATALOG__BREAKER__WAIT_OPEN_MS", "3000"),
        ("APP__RESILIENCE__CATALOG__BREAKER__HALF_OPEN_CALLS", "1"),
    ]);
    let catalog = client(&proxy, Arc::clone(&policy));
    let cx = CallContext::background();
    let id = ProductId::generate();

    proxy.set(Fault::Unavailable);
    for _ in 0..4 {
        let err = catalog.get_product(&cx, id).await.unwrap_err();
        assert!(
            matches!(err, CatalogError::Common(Failure::Unavailable(_))),
            "{err:?}"
        );
    }
    assert_eq!(policy.state(), State::Open, "4 failures in a window of 4");

    // Open: calls fail fast, and the proxy sees no connection at all.
    let seen = proxy.connections();
    let started = Instant::now();
    for _ in 0..10 {
        let err = catalog.get_product(&cx, id).await.unwrap_err();
        assert!(
            matches!(
                err,
                CatalogError::Common(Failure::Degraded(Degradation::CircuitOpen { .. }))
            ),
            "{err:?}"
        );
    }
    assert_eq!(proxy.connections(), seen, "no network call while open");
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "within the open wait: {:?}",
        started.elapsed()
    );

    // After the wait, one trial goes through; the catalog is back, so it closes.
    proxy.set(Fault::Pass);
    tokio::time::sleep(Duration::from_millis(3100).saturating_sub(started.elapsed())).await;
    let err = catalog.get_product(&cx, id).await.unwrap_err();
    assert_eq!(
        err,
        CatalogError::ProductNotFound(id),
        "a real answer: the trial reached the catalog"
    );
    assert_eq!(policy.state(), State::Closed);
    assert_eq!(proxy.connections(), seen + 1);

    let metrics = app.get("/metrics").await.text().await.unwrap();
    for line in [
        r#"remote_breaker_transitions_total{dependency="catalog",to="open"} 1"#,
        r#"remote_breaker_transitions_total{dependency="catalog",to="half_open"} 1"#,
        r#"remote_breaker_transitions_total{dependency="catalog",to="closed"} 1"#,
        r#"remote_calls_total{dependency="catalog",outcome="breaker_open"} 10"#,
        r#"remote_breaker_state{dependency="catalog"} 0"#,
    ] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_an_open_breaker_of_a_remote_module() {
    let catalog = spawn_app().await;
    let proxy = FaultProxy::start(port_of(&catalog)).await;
    let upstream = format!("http://127.0.0.1:{}", proxy.port());
    // Its other modules trade events with the catalog: through the broker.
    let gateway = crate::events::app_on(
        "rabbitmq",
        &[
            ("APP__MODULES__CATALOG__MODE", "remote"),
            ("APP__MODULES__CATALOG__URL", upstream.as_str()),
            ("APP__RESILIENCE__CATALOG__MAX_RETRIES", "0"),
            ("APP__RESILIENCE__CATALOG__BREAKER__MINIMUM_CALLS", "3"),
            ("APP__RESILIENCE__CATALOG__BREAKER__WINDOW_SIZE", "3"),
            ("APP__RESILIENCE__CATALOG__BREAKER__WAIT_OPEN_MS", "60000"),
        ],
    )
    .await;
    proxy.set(Fault::Unavailable);
    for _ in 0..3 {
        assert_eq!(gateway.get("/api/v1/products").await.status(), 503);
    }
    let open = gateway.get("/api/v1/products").await;
    assert_problem(open, 503, "dependency_circuit_open").await;
    proxy.set(Fault::Pass);
    // Reported, but the gateway stays in rotation: it serves everything
    // else, and every gateway would say the same of the catalog.
    let ready = gateway.ready().await;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(
        body["checks"]["module:catalog"]["error"], "circuit breaker open",
        "the catalog answers again, but the breaker is open"
    );
}

/// A module's 429 is its answer to one client (that client's budget): the
/// gateway passes it on and its breaker, shared by every client, does not
/// count it, so one client over its limit cannot cut the module off for all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_429_goes_back_to_its_client_and_never_opens_the_breaker() {
    let catalog = spawn_app_with(&[
        ("APP__RATE_LIMIT__ENABLED", "true"),
        ("APP__RATE_LIMIT__PER_SECOND", crate::helpers::SLOW_RATE),
        ("APP__RATE_LIMIT__BURST", "1"),
    ])
    .await;
    let gateway = crate::events::app_on(
        "rabbitmq",
        &[
            ("APP__MODULES__CATALOG__MODE", "remote"),
            ("APP__MODULES__CATALOG__URL", catalog.address.as_str()),
            ("APP__RESILIENCE__CATALOG__MAX_RETRIES", "0"),
            ("APP__RESILIENCE__CATALOG__BREAKER__MINIMUM_CALLS", "3"),
            ("APP__RESILIENCE__CATALOG__BREAKER__WINDOW_SIZE", "3"),
            ("APP__RESILIENCE__CATALOG__BREAKER__WAIT_OPEN_MS", "60000"),
        ],
    )
    .await;
    let mut limited = 0;
    for _ in 0..8 {
        let response = gateway.get("/api/v1/products").await;
        match response.status().as_u16() {
            200 => {}
            429 => {
                limited += 1;
                assert!(response.headers().contains_key("retry-after"));
            }
            other => panic!("{other}: {}", response.text().await.unwrap()),
        }
    }
    assert!(
        limited >= 3,
        "the catalog's limit was hit ({limited} times)"
    );
    let ready = gateway.ready().await;
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["module:catalog"]["status"], "up", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_with_jitter_and_stop_at_the_budget() {
    let app = spawn_app().await;
    let proxy = FaultProxy::start(port_of(&app)).await;
    proxy.set(Fault::Drop);
    let lenient_breaker = [
        ("APP__RESILIENCE__CATALOG__BREAKER__MINIMUM_CALLS", "100000"),
        ("APP__RESILIENCE__CATALOG__BREAKER__WINDOW_SIZE", "100000"),
    ];
    let mut vars = lenient_breaker.to_vec();
    vars.extend([
        ("APP__RESILIENCE__CATALOG__MAX_RETRIES", "3"),
        ("APP__RESILIENCE__CATALOG__RETRY_BASE_MS", "100"),
        ("APP__RESILIENCE__CATALOG__RETRY_MAX_MS", "1000"),
        ("APP__RESILIENCE__CATALOG__RETRY_BUDGET_MIN_PER_SEC", "100"),
    ]);
    let catalog = client(&proxy, catalog_policy(&vars));
    let cx = CallContext::background();
    let calls = 8;
    for _ in 0..calls {
        assert!(
            catalog
                .get_product(&cx, ProductId::generate())
                .await
                .is_err()
        );
    }
    let arrivals = proxy.arrivals();
    assert_eq!(
        arrivals.len(),
        calls * 4,
        "each call: one attempt and three retries"
    );
    // Gaps between attempts of one call, by retry number, over the calls.
    let mut gaps: [Vec<f64>; 3] = Default::default();
    for call in arrivals.chunks(4) {
        for (i, pair) in call.windows(2).enumerate() {
            gaps[i].push(pair[1].duration_since(pair[0]).as_secs_f64() * 1000.0);
        }
    }
    for (i, of_retry) in gaps.iter().enumerate() {
        let ceiling = 100.0 * f64::from(1u32 << i);
        // Full jitter: each gap is up to the ceiling, plus the attempt
        // itself. Judged on the median, with slack: a stall of a busy
        // machine (the suite runs the 200-customer race alongside; one
        // gap of 2.1 s was seen) moves one sample, not the median.
        let mut sorted = of_retry.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        assert!(
            median <= ceiling + 800.0,
            "retry {i}: median gap {median:.0} ms above its {ceiling} ms ceiling: {gaps:?}"
        );
    }
    // The ceilings grow: some third retry waited longer than the first
    // retry's whole ceiling (100 ms) and an attempt. By chance none of 8
    // would with probability 0.3^8; a stall only lengthens gaps.
    assert!(
        gaps[2].iter().any(|gap| *gap > 120.0),
        "the gaps grow: {gaps:?} ms"
    );

    // A budget of nothing beyond its one-token reserve: one retry in all.
    let stingy = FaultProxy::start(port_of(&app)).await;
    stingy.set(Fault::Drop);
    let mut vars = lenient_breaker.to_vec();
    vars.extend([
        ("APP__RESILIENCE__CATALOG__MAX_RETRIES", "3"),
        ("APP__RESILIENCE__CATALOG__RETRY_BASE_MS", "1"),
        ("APP__RESILIENCE__CATALOG__RETRY_BUDGET_PERCENT", "0"),
        ("APP__RESILIENCE__CATALOG__RETRY_BUDGET_MIN_PER_SEC", "0"),
    ]);
    let catalog = client(&stingy, catalog_policy(&vars));
    for _ in 0..10 {
        assert!(
            catalog
                .get_product(&cx, ProductId::generate())
                .await
                .is_err()
        );
    }
    assert_eq!(
        stingy.connections(),
        11,
        "ten calls, one retry: the budget, not 30 retries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_or_garbled_answers_are_failures_of_the_dependency_not_panics() {
    let app = spawn_app().await;
    let proxy = FaultProxy::start(port_of(&app)).await;
    let catalog = client(
        &proxy,
        catalog_policy(&[("APP__RESILIENCE__CATALOG__MAX_RETRIES", "0")]),
    );
    for fault in [Fault::Truncated, Fault::Garbled] {
        proxy.set(fault);
        let err = catalog
            .get_product(&CallContext::background(), ProductId::generate())
            .await
            .unwrap_err();
        assert!(
            matches!(err, CatalogError::Common(Failure::Unavailable(_))),
            "{fault:?}: a misbehaving dependency (503), not a bug of ours (500): {err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_serves_the_last_known_product_while_the_catalog_is_down() {
    let app = spawn_app().await;
    let created: Value = app
        .post_product(&product_json("FALLBACK-1"))
        .await
        .json()
        .await
        .unwrap();
    let id = ProductId::from(uuid::Uuid::parse_str(created["id"].as_str().unwrap()).unwrap());
    let proxy = FaultProxy::start(port_of(&app)).await;
    let catalog = client(
        &proxy,
        catalog_policy(&[("APP__RESILIENCE__CATALOG__MAX_RETRIES", "0")]),
    );
    let cx = CallContext::background();

    let fresh = catalog.get_product_or_last_known(&cx, id).await.unwrap();
    assert!(!fresh.stale);
    proxy.stop_listening(); // as if the catalog process were killed
    let stale = catalog.get_product_or_last_known(&cx, id).await.unwrap();
    assert!(stale.stale, "marked stale");
    assert_eq!(stale.product, fresh.product);
    let never_seen = catalog
        .get_product_or_last_known(&cx, ProductId::generate())
        .await
        .unwrap_err();
    assert!(
        matches!(never_seen, CatalogError::Common(Failure::Unavailable(_))),
        "{never_seen:?}"
    );
    proxy.resume().await;
    assert!(
        !catalog
            .get_product_or_last_known(&cx, id)
            .await
            .unwrap()
            .stale,
        "fresh again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_catalog_does_not_exhaust_the_gateway() {
    let catalog = spawn_app().await;
    let proxy = FaultProxy::start(port_of(&catalog)).await;
    proxy.set(Fault::Latency(Duration::from_secs(3)));
    let upstream = format!("http://127.0.0.1:{}", proxy.port());
    // Its other modules trade events with the catalog: through the broker.
    let gateway = crate::events::app_on(
        "rabbitmq",
        &[
            ("APP__MODULES__CATALOG__MODE", "remote"),
            ("APP__MODULES__CATALOG__URL", upstream.as_str()),
            ("APP__RESILIENCE__CATALOG__MAX_CONCURRENT", "2"),
            ("APP__RESILIENCE__CATALOG__ATTEMPT_TIMEOUT_MS", "10000"),
            ("APP__RESILIENCE__CATALOG__DEADLINE_MS", "10000"),
            ("APP__SERVER__WORKERS", "2"),
        ],
    )
    .await;
    let before = proxy.connections();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let request = gateway.client.get(gateway.url("/api/v1/products"));
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    // Both hold their slot once they reach the proxy (which holds them 3 s).
    crate::helpers::eventually("both slow calls at the catalog", || async {
        (proxy.connections() >= before + 2).then_some(())
    })
    .await;

    let started = Instant::now();
    let third = gateway.get("/api/v1/products").await;
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "rejected without waiting for a slot (the slow calls take 3 s): {:?}",
        started.elapsed()
    );
    assert!(third.headers().contains_key("retry-after"));
    assert_problem(third, 503, "dependency_overloaded").await;
    let started = Instant::now();
    assert_eq!(gateway.get("/health/live").await.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "the gateway still serves while its catalog calls wait"
    );
    for s in slow {
        assert_eq!(s.await.unwrap(), 200, "the slow calls finish");
    }
}

/// The fallback where it is used: an order process whose catalog is
/// remote checks a cart against the product it read before while the
/// catalog is down (the cart is a customer's list; the checkout prices it
/// afresh), and answers 503 for a product it never saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_is_checked_against_the_last_known_product_while_the_catalog_is_down() {
    let catalog = spawn_app().await;
    let created: Value = catalog
        .post_product(&product_json("FALLBACK-CART"))
        .await
        .json()
        .await
        .unwrap();
    let product = created["id"].as_str().unwrap().to_owned();
    let proxy = FaultProxy::start(port_of(&catalog)).await;
    let url = format!("http://127.0.0.1:{}", proxy.port());
    // Events cross to the remote catalog through the broker, as they must.
    let namespace = format!("test-{}", uuid::Uuid::new_v4().simple());
    let shop = spawn_app_with(&[
        ("APP__EVENTS__TRANSPORT", "rabbitmq"),
        ("APP__EVENTS__RABBITMQ__NAMESPACE", namespace.as_str()),
        ("APP__EVENTS__RABBITMQ__QUEUE_TTL_MS", "120000"),
        ("APP__MODULES__CATALOG__MODE", "remote"),
        ("APP__MODULES__CATALOG__URL", url.as_str()),
        ("APP__RESILIENCE__CATALOG__MAX_RETRIES", "0"),
    ])
    .await;
    let token = shop.token(&[Role::Customer]);
    let put = |product: String| {
        let request = shop
            .client
            .put(shop.url("/api/v1/cart"))
            .bearer_auth(&token)
            .json(&json!({"items": [{"product_id": product, "quantity": 1}]}));
        async move { request.send().await.unwrap() }
    };
    assert_eq!(put(product.clone()).await.status(), 200);
    proxy.stop_listening(); // as if the catalog process were killed
    let again = put(product.clone()).await;
    assert_eq!(again.status(), 200, "{}", again.text().await.unwrap());
    let unseen = put(uuid::Uuid::now_v7().to_string()).await;
    assert_eq!(unseen.status(), 503, "{}", unseen.text().await.unwrap());
    proxy.resume().await;
}
