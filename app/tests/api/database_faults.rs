//! The database failing: PostgreSQL stopped and started again, a table locked, a pool exhausted.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{assert_problem, spawn_app_with};

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
    // Ready again too (within a second: a ping's outcome is reused that long).
    crate::helpers::eventually("ready again", || async {
        (app.get("/health/ready").await.status() == 200).then_some(())
    })
    .await;
    drop(app);
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    drop(std::fs::remove_dir_all(&data_dir));
    drop(std::fs::remove_file(data_dir.with_extension("password")));
}

/// Another session takes the catalog's products table and holds it until
/// the returned connection rolls back.
/// Waits until `n` sessions wait for the lock `holder` holds on
/// `catalog.products`.
pub(crate) async fn waiting_on_the_lock(holder: &mut diesel_async::AsyncPgConnection, n: i64) {
    use diesel_async::RunQueryDsl as _;
    #[derive(diesel::QueryableByName)]
    struct Waiting {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let started = Instant::now();
    loop {
        let waiting: Waiting = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_locks \
             WHERE relation = 'catalog.products'::regclass AND NOT granted",
        )
        .get_result(holder)
        .await
        .unwrap();
        if waiting.n >= n {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} of {n} requests reached the lock",
            waiting.n
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn lock_products(app: &crate::helpers::TestApp) -> diesel_async::AsyncPgConnection {
    lock_table(app, "catalog.products").await
}

/// Another session takes `table` and holds it until the returned
/// connection rolls back.
pub(crate) async fn lock_table(
    app: &crate::helpers::TestApp,
    table: &str,
) -> diesel_async::AsyncPgConnection {
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

pub(crate) async fn release(mut holder: diesel_async::AsyncPgConnection) {
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
        ("APP__CATALOG__DATABASE__MAX_CONNECTIONS", "2"),
        ("APP__CATALOG__CACHE__BACKEND", "off"),
    ])
    .await;
    // Background tasks share the two connections too; wait until they are
    // free.
    crate::helpers::eventually("the catalog to answer", || async {
        (app.get("/api/v1/products").await.status() == 200).then_some(())
    })
    .await;
    let mut holder = lock_products(&app).await;

    // The first two requests take the pool's two connections (one share
    // for every runtime at this size) and wait on the lock; the third
    // finds no connection to borrow.
    let first = tokio::spawn(app.client.get(app.url("/api/v1/products")).send());
    let second = tokio::spawn(app.client.get(app.url("/api/v1/products")).send());
    waiting_on_the_lock(&mut holder, 2).await;
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
    for held in [first, second] {
        let held = held.await.unwrap().unwrap();
        assert_eq!(
            held.status(),
            200,
            "the requests that held a connection complete"
        );
    }
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

/// Readiness checks every module's database at once: a database that takes
/// connections and never answers costs the probe one check timeout (2 s),
/// not one per module in turn (12 s, which a kubelet's 3 s probe would not
/// wait for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_checks_the_databases_at_once() {
    use testkit::fault::{Fault, FaultProxy};
    let db = crate::helpers::test_database().await;
    let mut url = url::Url::parse(db.url()).unwrap();
    let proxy = FaultProxy::start(url.port().unwrap_or(5432)).await;
    url.set_port(Some(proxy.port())).unwrap();
    let app = spawn_app_with(&[("DATABASE_URL", url.as_str())]).await;
    // The server's worker has borrowed no connection yet: each check opens one.
    proxy.set(Fault::Latency(Duration::from_secs(30)));

    let started = Instant::now();
    let ready = app.ready().await;
    let took = started.elapsed();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    let stalled = body["checks"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, check)| {
            name.starts_with("database:") && check["error"] == "no answer in time"
        })
        .count();
    assert_eq!(stalled, 6, "every module's check waited: {body}");
    assert!(
        took < Duration::from_secs(8),
        "one check timeout (2 s), not one per module (12 s): {took:?}"
    );
}

/// A session the server ends under a statement (an administrator, a
/// failover: `pg_terminate_backend`) is the database being unavailable (503,
/// retried; a handler's event is deferred, not dead-lettered), not a bug.
/// diesel-async reports it without the kind diesel names for it, so this is
/// the error as it really comes, not one built by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_server_ends_is_the_database_unavailable() {
    use diesel::sql_types::Integer;
    use diesel_async::{AsyncConnection as _, RunQueryDsl as _};
    #[derive(diesel::QueryableByName)]
    struct Pid {
        #[diesel(sql_type = Integer)]
        pid: i32,
    }
    let db = crate::helpers::test_database().await;
    let mut victim = diesel_async::AsyncPgConnection::establish(db.url())
        .await
        .unwrap();
    let mut admin = diesel_async::AsyncPgConnection::establish(db.url())
        .await
        .unwrap();
    let Pid { pid } = diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result(&mut victim)
        .await
        .unwrap();
    // Ended while its statement runs, and ended before its next one.
    let sleeping = tokio::spawn(async move {
        let error = diesel::sql_query("SELECT pg_sleep(5)")
            .execute(&mut victim)
            .await
            .unwrap_err();
        let next = diesel::sql_query("SELECT 1")
            .execute(&mut victim)
            .await
            .unwrap_err();
        (error, next)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    diesel::sql_query(format!("SELECT pg_terminate_backend({pid})"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (during, after) = sleeping.await.unwrap();
    for error in [&during, &after] {
        assert_eq!(
            db::unavailable_reason(error),
            Some("lost its connection"),
            "{error:?}"
        );
    }
}
