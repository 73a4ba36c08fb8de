//! Resilience under injected faults, on real sockets: a fault proxy between
//! the caller and a real shop (or a real PostgreSQL that is stopped and
//! started again).

use std::sync::Arc;
use std::time::{Duration, Instant};

use catalog_api::client::CatalogClient;
use catalog_api::{CatalogApi, CatalogError, ProductId};
use kernel::{CallContext, Degradation};
use resilience::State;
use serde_json::Value;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_fails_fast_then_lets_a_trial_through_and_closes() {
    let app = spawn_app().await;
    let proxy = FaultProxy::start(port_of(&app)).await;
    let policy = catalog_policy(&[
        ("APP__RESILIENCE__CATALOG__MAX_RETRIES", "0"),
        ("APP__RESILIENCE__CATALOG__BREAKER__WINDOW_SIZE", "4"),
        ("APP__RESILIENCE__CATALOG__BREAKER__MINIMUM_CALLS", "4"),
        ("APP__RESILIENCE__CATALOG__BREAKER__WAIT_OPEN_MS", "500"),
        ("APP__RESILIENCE__CATALOG__BREAKER__HALF_OPEN_CALLS", "1"),
    ]);
    let catalog = client(&proxy, Arc::clone(&policy));
    let cx = CallContext::background();
    let id = ProductId::generate();

    proxy.set(Fault::Unavailable);
    for _ in 0..4 {
        let err = catalog.get_product(&cx, id).await.unwrap_err();
        assert!(matches!(err, CatalogError::Unavailable(_)), "{err:?}");
    }
    assert_eq!(policy.state(), State::Open, "4 failures in a window of 4");

    // Open: calls fail fast, and the proxy sees no connection at all.
    let seen = proxy.connections();
    let started = Instant::now();
    for _ in 0..10 {
        let err = catalog.get_product(&cx, id).await.unwrap_err();
        assert!(
            matches!(err, CatalogError::Degraded(Degradation::CircuitOpen { .. })),
            "{err:?}"
        );
    }
    assert_eq!(proxy.connections(), seen, "no network call while open");
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "fast: {:?}",
        started.elapsed()
    );

    // After the wait, one trial goes through; the catalog is back, so it closes.
    proxy.set(Fault::Pass);
    tokio::time::sleep(Duration::from_millis(600)).await;
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
        ("APP__RATE_LIMIT__PER_SECOND", "1"),
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
    // Gaps between attempts of one call, by retry number.
    let mut gaps = [0.0f64; 3];
    for call in arrivals.chunks(4) {
        for (i, pair) in call.windows(2).enumerate() {
            let gap = pair[1].duration_since(pair[0]).as_secs_f64() * 1000.0;
            let ceiling = 100.0 * f64::from(1u32 << i);
            // Slack for the attempt itself and a busy machine (the suite
            // runs the 200-customer checkout race alongside).
            assert!(
                gap <= ceiling + 800.0,
                "retry {i}: {gap:.0} ms above its {ceiling} ms ceiling"
            );
            gaps[i] += gap / calls as f64;
        }
    }
    assert!(gaps[2] > gaps[0], "the gaps grow: average {gaps:?} ms");

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
            matches!(err, CatalogError::Unavailable(_)),
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
        matches!(never_seen, CatalogError::Unavailable(_)),
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
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let request = gateway.client.get(gateway.url("/api/v1/products"));
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let third = gateway.get("/api/v1/products").await;
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "rejected at once: {:?}",
        started.elapsed()
    );
    assert!(third.headers().contains_key("retry-after"));
    assert_problem(third, 503, "dependency_overloaded").await;
    let started = Instant::now();
    assert_eq!(gateway.get("/health/live").await.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "the gateway still serves"
    );
    for s in slow {
        assert_eq!(s.await.unwrap(), 200, "the slow calls finish");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_fast_while_postgres_is_down_and_recover_when_it_returns() {
    use db::embedded::{EmbeddedOptions, EmbeddedPostgres};
    let data_dir = testkit::scratch_dir(&format!("shop-restart-{}", uuid::Uuid::new_v4().simple()));
    let port = crate::helpers::free_port();
    let options = EmbeddedOptions {
        data_dir: data_dir.clone(),
        durable: false,
        port: Some(port),
    };
    let start = |options: EmbeddedOptions| async move {
        tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&options))
            .await
            .unwrap()
            .unwrap()
    };
    let server = start(options.clone()).await;
    db::create_database(&server.url("postgres"), "shop")
        .await
        .unwrap();
    let url = server.url("shop");
    let app = spawn_app_with(&[
        ("DATABASE_URL", url.as_str()),
        ("APP__DATABASE__MIGRATE_ON_START", "true"),
        ("APP__DATABASE__ACQUIRE_TIMEOUT_MS", "500"),
        ("APP__DATABASE__CONNECT_TIMEOUT_MS", "500"),
    ])
    .await;
    assert_eq!(app.get("/api/v1/products").await.status(), 200);

    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    let started = Instant::now();
    let down = app.get("/api/v1/products").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "fails fast: {:?}",
        started.elapsed()
    );
    assert_problem(down, 503, "catalog_unavailable").await;
    // Its own database down: out of rotation, the cause named, not shown raw.
    let ready = app.ready().await;
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    let error = ready["checks"]["database:catalog"]["error"]
        .as_str()
        .unwrap();
    assert!(
        error == "unreachable" || error == "no answer in time",
        "{error}"
    );

    let server = start(options).await;
    crate::helpers::eventually("the app to recover by itself", || async {
        (app.get("/api/v1/products").await.status() == 200).then_some(())
    })
    .await;
    assert_eq!(app.get("/health/ready").await.status(), 200);
    drop(app);
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    drop(std::fs::remove_dir_all(&data_dir));
    drop(std::fs::remove_file(data_dir.with_extension("password")));
}

/// Another session takes the catalog's products table and holds it until
/// the returned connection rolls back.
async fn lock_products(app: &crate::helpers::TestApp) -> diesel_async::AsyncPgConnection {
    lock_table(app, "catalog.products").await
}

/// Another session takes `table` and holds it until the returned
/// connection rolls back.
async fn lock_table(app: &crate::helpers::TestApp, table: &str) -> diesel_async::AsyncPgConnection {
    use diesel_async::{AsyncConnection as _, RunQueryDsl as _};
    let url = app.settings.database.url.clone().unwrap();
    let mut holder = diesel_async::AsyncPgConnection::establish(&url)
        .await
        .unwrap();
    for sql in [
        "BEGIN".to_owned(),
        format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"),
    ] {
        diesel::sql_query(sql).execute(&mut holder).await.unwrap();
    }
    holder
}

async fn release(mut holder: diesel_async::AsyncPgConnection) {
    use diesel_async::RunQueryDsl as _;
    diesel::sql_query("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_stuck_behind_a_lock_ends_at_the_statement_timeout_with_503() {
    let app = spawn_app_with(&[
        ("APP__DATABASE__STATEMENT_TIMEOUT_MS", "300"),
        ("APP__CATALOG__CACHE__BACKEND", "off"),
    ])
    .await;
    assert_eq!(app.get("/api/v1/products").await.status(), 200);
    let holder = lock_products(&app).await;

    let started = Instant::now();
    let stuck = app.get("/api/v1/products").await;
    let took = started.elapsed();
    assert!(stuck.headers().contains_key("retry-after"));
    let body = assert_problem(stuck, 503, "catalog_unavailable").await;
    assert!(
        body["detail"].as_str().unwrap().contains("too slow"),
        "the statement timeout, not another failure: {body}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "ends at the statement timeout: {took:?}"
    );

    release(holder).await;
    assert_eq!(app.get("/api/v1/products").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_for_a_busy_pool_gets_503_at_the_wait_timeout() {
    let app = spawn_app_with(&[
        ("APP__DATABASE__STATEMENT_TIMEOUT_MS", "5000"),
        ("APP__DATABASE__ACQUIRE_TIMEOUT_MS", "500"),
        ("APP__CATALOG__DATABASE__MAX_CONNECTIONS", "1"),
        ("APP__CATALOG__CACHE__BACKEND", "off"),
    ])
    .await;
    // Background tasks share the one connection too; wait until it is free.
    crate::helpers::eventually("the catalog to answer", || async {
        (app.get("/api/v1/products").await.status() == 200).then_some(())
    })
    .await;
    let holder = lock_products(&app).await;

    // The first request takes the pool's only connection and waits on the
    // lock; the second finds no connection to borrow.
    let first = tokio::spawn(app.client.get(app.url("/api/v1/products")).send());
    tokio::time::sleep(Duration::from_millis(700)).await;
    let started = Instant::now();
    let waiting = app.get("/api/v1/products").await;
    let took = started.elapsed();
    let body = assert_problem(waiting, 503, "catalog_unavailable").await;
    assert!(
        !body["detail"].as_str().unwrap().contains("too slow"),
        "the pool wait, not the statement timeout: {body}"
    );
    assert!(
        took < Duration::from_millis(3000),
        "ends at the pool wait timeout, long before the statement timeout: {took:?}"
    );

    release(holder).await;
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), 200, "the first request completes");
    assert_eq!(app.get("/api/v1/products").await.status(), 200);
}

/// Every module answers a database that cannot answer in time with 503
/// naming itself (`<module>_unavailable`, `Retry-After`), never 500: one
/// of its tables held by another session, one of its reads asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_module_answers_a_stuck_database_with_503() {
    let app = spawn_app_with(&[
        ("APP__DATABASE__STATEMENT_TIMEOUT_MS", "300"),
        ("APP__CATALOG__CACHE__BACKEND", "off"),
    ])
    .await;
    let admin = app.token(&[kernel::Role::Admin]);
    let nobody = uuid::Uuid::now_v7();
    let cases = [
        ("user", "users.users", "/api/v1/users/me".to_owned()),
        ("catalog", "catalog.products", "/api/v1/products".to_owned()),
        (
            "inventory",
            "inventory.stock",
            "/api/v1/inventory/NO-SUCH-SKU".to_owned(),
        ),
        ("order", "orders.orders", "/api/v1/orders".to_owned()),
        (
            "payment",
            "payment.payments",
            format!("/api/v1/payments/{nobody}"),
        ),
        (
            "notification",
            "notification.notifications",
            "/api/v1/notifications".to_owned(),
        ),
    ];
    let get = |path: &str| app.client.get(app.url(path)).bearer_auth(&admin).send();
    for (module, table, path) in cases {
        let before = get(&path).await.unwrap().status();
        assert!(
            !before.is_server_error(),
            "{module}: {path} answered {before} before"
        );
        let holder = lock_table(&app, table).await;
        let stuck = get(&path).await.unwrap();
        assert!(stuck.headers().contains_key("retry-after"), "{module}");
        assert_problem(stuck, 503, &format!("{module}_unavailable")).await;
        release(holder).await;
        let after = get(&path).await.unwrap().status();
        assert_eq!(after, before, "{module}: {path} recovers");
    }
}
