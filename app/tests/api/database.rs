//! Per-module pools and per-schema migration history.

use diesel::{ExpressionMethods as _, QueryDsl as _};
use diesel_async::RunQueryDsl;

use crate::helpers::{test_database, test_settings};

#[derive(diesel::QueryableByName, Debug)]
struct Settings {
    #[diesel(sql_type = diesel::sql_types::Text)]
    search_path: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    statement_timeout: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    application_name: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_connections_carry_schema_timeout_and_name() {
    let db = test_database().await;
    let settings = test_settings(
        Some(db.url()),
        &[("APP__DATABASE__STATEMENT_TIMEOUT_MS", "1234")],
    );
    let pool =
        app::database::module_pool(&settings, app::modules::ModuleName::Catalog, db.url()).unwrap();
    let mut conn = pool.get().await.unwrap();

    let got: Settings = diesel::sql_query(
        "SELECT current_setting('search_path') AS search_path, \
                current_setting('statement_timeout') AS statement_timeout, \
                current_setting('application_name') AS application_name",
    )
    .get_result(&mut conn)
    .await
    .unwrap();

    assert_eq!(got.search_path, "catalog");
    assert_eq!(got.statement_timeout, "1234ms");
    assert_eq!(got.application_name, "shop/catalog");
}

/// Readiness pings each module's database. A pool whose every connection
/// is in use (a burst of slow requests) still has its database answering:
/// the ping is made on a connection of its own and succeeds, where waiting
/// for the pool ran out the check's time and took the instance (every
/// instance, under the same load) out of its load balancer. A database
/// that does not answer still fails it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pool_pings_its_database_up() {
    let db = test_database().await;
    let settings = test_settings(
        Some(db.url()),
        &[
            ("APP__SERVER__WORKERS", "1"),
            ("APP__CATALOG__DATABASE__MAX_CONNECTIONS", "2"),
        ],
    );
    let pool =
        app::database::module_pool(&settings, app::modules::ModuleName::Catalog, db.url()).unwrap();
    let held = (pool.get().await.unwrap(), pool.get().await.unwrap());
    let check = std::time::Duration::from_secs(2);
    assert_eq!(db::ping(&pool, check).await, Ok(()));
    // A flood of checks meanwhile: one connection opened, its answer shared.
    let flood = futures_util::future::join_all((0..50).map(|_| db::ping(&pool, check))).await;
    assert!(flood.iter().all(Result::is_ok), "{flood:?}");
    drop(held);
    assert_eq!(db::ping(&pool, check).await, Ok(()));

    let nowhere = db::build_pool(&db::PoolOptions {
        url: "postgres://shop@127.0.0.1:9/nothing".to_owned(),
        schema: "catalog",
        max_size: 2,
        runtimes: 1,
        acquire_timeout: std::time::Duration::from_millis(500),
        connect_timeout: std::time::Duration::from_millis(500),
        statement_timeout: std::time::Duration::from_secs(1),
    })
    .unwrap();
    assert!(db::ping(&nowhere, check).await.is_err());
}

#[derive(diesel::QueryableByName)]
struct Backend {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pid: i32,
}

/// The backend behind a connection of `pool`'s share for the calling
/// runtime, and that connection (still borrowed).
async fn backend(pool: &db::Pool) -> (i32, db::Object) {
    let mut conn = pool.get().await.unwrap();
    let row: Backend = diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result(&mut conn)
        .await
        .unwrap();
    (row.pid, conn)
}

/// On a runtime of its own (an actix worker is one) and a thread of its
/// own: the backend of a first borrow, then `more` borrows while it is
/// held, and whether the last of them got a connection. The caller's
/// runtime keeps running meanwhile: it drives the connections it opened.
async fn borrow_on_another_runtime(pool: &db::Pool, more: usize) -> (i32, bool) {
    let pool = pool.clone();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (first, _held) = backend(&pool).await;
            let mut borrowed = Vec::new();
            for _ in 0..more {
                match pool.get().await {
                    Ok(conn) => borrowed.push(conn),
                    Err(db::PoolError::Timeout(_)) => return (first, false),
                    Err(e) => panic!("{e}"),
                }
            }
            (first, true)
        })
    });
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap()
}

/// Each runtime borrows connections of its own (a connection is driven by
/// the runtime that opened it), within the module's total: 4 connections
/// over 2 runtimes are shares of 2; 3 are one share for both (a share of
/// one would deadlock a task that holds one connection and asks another).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_runtime_borrows_its_own_connections_within_the_total() {
    let db = test_database().await;
    let options = |max_size, runtimes| db::PoolOptions {
        url: db.url().to_owned(),
        schema: "catalog",
        max_size,
        runtimes,
        acquire_timeout: std::time::Duration::from_millis(300),
        connect_timeout: std::time::Duration::from_secs(5),
        statement_timeout: std::time::Duration::from_secs(5),
    };
    let pool = db::build_pool(&options(4, 2)).unwrap();
    let (here, conn) = backend(&pool).await;
    drop(conn);
    let (there, third) = borrow_on_another_runtime(&pool, 2).await;
    assert_ne!(there, here, "the other runtime opens its own");
    assert!(
        !third,
        "its share is two, though this runtime's has a free one"
    );
    let (again, _held) = backend(&pool).await;
    assert_eq!(again, here, "this runtime gets its own connection back");
    let status = pool.status();
    assert_eq!((status.max_size, status.size), (4, 3), "{status:?}");

    let pool = db::build_pool(&options(3, 2)).unwrap();
    let (here, conn) = backend(&pool).await;
    drop(conn);
    let (there, third) = borrow_on_another_runtime(&pool, 2).await;
    assert_eq!(there, here, "one share, lent to both runtimes");
    assert!(third, "three in it");
    assert!(!borrow_on_another_runtime(&pool, 3).await.1, "and no more");
}

#[derive(diesel::QueryableByName)]
struct Version {
    #[diesel(sql_type = diesel::sql_types::Text)]
    version: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_history_lives_in_the_module_schema_and_reruns_are_no_ops() {
    let db = test_database().await;
    let mut conn = {
        use diesel_async::AsyncConnection as _;
        diesel_async::AsyncPgConnection::establish(db.url())
            .await
            .unwrap()
    };
    let versions: Vec<Version> =
        diesel::sql_query("SELECT version FROM catalog.__diesel_schema_migrations")
            .load(&mut conn)
            .await
            .unwrap();
    assert!(
        versions.iter().any(|v| v.version == "20261126000001"),
        "catalog history in catalog schema"
    );
    let public: Vec<Version> = diesel::sql_query(
        "SELECT table_name AS version FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let public: Vec<&str> = public.iter().map(|t| t.version.as_str()).collect();
    assert!(public.is_empty(), "nothing lands in public: {public:?}");

    let applied = db::migrate(db.url(), catalog::MODULE_MIGRATIONS)
        .await
        .unwrap();
    assert!(applied.is_empty(), "already migrated: {applied:?}");
}

/// Replicas starting together on a release with new migrations migrate
/// the same schema at once: one applies them, the others wait and find
/// nothing pending, and every start succeeds (without the lock, the
/// second failed on `CREATE SCHEMA` or on a table the first created).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_of_one_schema_all_succeed() {
    for _ in 0..3 {
        let db = testkit::TestDatabase::create(&[]).await;
        let (a, b) = tokio::join!(
            db::migrate(db.url(), catalog::MODULE_MIGRATIONS),
            db::migrate(db.url(), catalog::MODULE_MIGRATIONS)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(
            a.is_empty() != b.is_empty(),
            "one applies, the other finds nothing: {a:?} / {b:?}"
        );
        assert!(a.len().max(b.len()) > 1, "{a:?} / {b:?}");
    }
}

/// A migration waits while another process holds its schema's lock, and
/// runs once it is let go (the test holds the lock as another replica
/// migrating would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_waits_for_the_schemas_lock() {
    use diesel_async::{AsyncConnection as _, SimpleAsyncConnection as _};
    let db = test_database().await;
    let mut other = diesel_async::AsyncPgConnection::establish(db.url())
        .await
        .unwrap();
    other
        .batch_execute("SELECT pg_advisory_lock(hashtext('shop.migrate.catalog'))")
        .await
        .unwrap();
    let url = db.url().to_owned();
    let migrating =
        tokio::spawn(async move { db::migrate(&url, catalog::MODULE_MIGRATIONS).await });
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(!migrating.is_finished(), "it waits for the lock");
    other
        .batch_execute("SELECT pg_advisory_unlock(hashtext('shop.migrate.catalog'))")
        .await
        .unwrap();
    let applied = migrating.await.unwrap().unwrap();
    assert!(applied.is_empty(), "migrated already: {applied:?}");
}

/// Statements pipelined on one connection (ADR 0015) run in the order
/// their futures are first polled, even on a fresh connection where each
/// is prepared first (the statement cache's lock queues them in order);
/// one sent after a failed one fails with its transaction, which rolls
/// back. What the checkout's pipelined transactions rely on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_statements_run_in_order_and_fail_with_their_transaction() {
    use diesel::result::Error as DieselError;
    use diesel_async::{AsyncConnection as _, AsyncPgConnection};
    use futures_util::future::join3;

    let db = test_database().await;
    let settings = test_settings(Some(db.url()), &[]);
    let pool =
        app::database::module_pool(&settings, app::modules::ModuleName::Catalog, db.url()).unwrap();
    let mut conn = pool.get().await.unwrap();
    db::sql("CREATE TEMPORARY TABLE pipelined (v int)")
        .execute(&mut conn)
        .await
        .unwrap();

    conn.transaction::<_, DieselError, _>(async |conn| {
        let mut c: &AsyncPgConnection = conn;
        let inserted = db::sql("INSERT INTO pipelined VALUES (1)").execute(&mut c);
        let tenfold = db::sql("UPDATE pipelined SET v = v * 10").execute(&mut c);
        let plus_one = db::sql("UPDATE pipelined SET v = v + 1").execute(&mut c);
        let (a, b, c) = join3(inserted, tenfold, plus_one).await;
        assert_eq!((a?, b?, c?), (1, 1, 1));
        Ok(())
    })
    .await
    .unwrap();
    let row: Value = db::sql("SELECT v FROM pipelined")
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.v, 11, "inserted, then times ten, then plus one");

    let failed = conn
        .transaction::<(), DieselError, _>(async |conn| {
            let mut c: &AsyncPgConnection = conn;
            let emptied = db::sql("DELETE FROM pipelined").execute(&mut c);
            let refused = db::sql("INSERT INTO pipelined VALUES (1 / 0)").execute(&mut c);
            let after = db::sql("INSERT INTO pipelined VALUES (2)").execute(&mut c);
            let (emptied, refused, after) = join3(emptied, refused, after).await;
            assert_eq!(emptied.unwrap(), 1);
            let refused = refused.unwrap_err().to_string();
            assert!(refused.contains("division by zero"), "{refused}");
            let after = after.unwrap_err().to_string();
            assert!(after.contains("current transaction is aborted"), "{after}");
            Err(DieselError::RollbackTransaction)
        })
        .await;
    assert!(matches!(failed, Err(DieselError::RollbackTransaction)));
    let row: Value = db::sql("SELECT v FROM pipelined")
        .get_result(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.v, 11, "nothing of the failed transaction is kept");
}

#[derive(diesel::QueryableByName)]
struct Value {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    v: i32,
}

diesel::table! {
    orders.carts (customer_id) {
        customer_id -> Uuid,
        items -> Jsonb,
    }
}

#[derive(diesel::QueryableByName)]
struct Prepared {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// How many statements the connection holds prepared that begin with
/// `start` (the view shows the connection's own only).
async fn prepared(conn: &mut db::Object, start: &str) -> i64 {
    let row: Prepared = db::sql(
        "SELECT count(*) AS n FROM pg_prepared_statements WHERE starts_with(statement, $1)",
    )
    .bind::<diesel::sql_types::Text, _>(start)
    .get_result(&mut **conn)
    .await
    .unwrap();
    row.n
}

/// diesel marks every UPDATE "unsafe to cache", so diesel-async prepares
/// it on each call and closes it after (a Parse round trip and a plan each
/// time); `db::cached` keeps it prepared on the connection for the next
/// call. The checkout's UPDATEs, upserts and multi-row INSERTs go through
/// it (docs/BENCHMARKS.md, eleventh session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_update_is_prepared_once_per_connection() {
    let db = test_database().await;
    let settings = test_settings(Some(db.url()), &[]);
    let pool =
        app::database::module_pool(&settings, app::modules::ModuleName::Order, db.url()).unwrap();
    let mut conn = pool.get().await.unwrap();
    let customer = uuid::Uuid::new_v4();
    diesel::insert_into(carts::table)
        .values((
            carts::customer_id.eq(customer),
            carts::items.eq(serde_json::json!([])),
        ))
        .execute(&mut *conn)
        .await
        .unwrap();
    let update =
        || diesel::update(carts::table.find(customer)).set(carts::items.eq(serde_json::json!([1])));
    let start = r#"UPDATE "orders"."carts""#;

    for _ in 0..3 {
        assert_eq!(update().execute(&mut *conn).await.unwrap(), 1);
    }
    assert_eq!(
        prepared(&mut conn, start).await,
        0,
        "diesel's own: none kept"
    );

    for _ in 0..3 {
        assert_eq!(db::cached(update()).execute(&mut *conn).await.unwrap(), 1);
    }
    assert_eq!(prepared(&mut conn, start).await, 1, "cached: one, reused");
}
