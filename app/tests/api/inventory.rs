//! The inventory: contract suite on both implementations, zero oversell
//! under concurrency, reservation expiry, low-stock alerts.

use std::sync::Arc;
use std::time::Duration;

use catalog_api::Sku;
use inventory_api::client::InventoryClient;
use inventory_api::contract::Harness;
use inventory_api::{
    Adjustment, InventoryApi, InventoryError, OrderId, ReservationLine, ReservationStatus,
    ReserveStock,
};
use kernel::Role;
use serde_json::Value;

use crate::helpers::{
    TestApp, assert_problem, bearer_contexts, caller, eventually, get_json, module_client,
    spawn_app, spawn_app_with, test_database, test_settings,
};

/// The in-process module over a fresh database, with `extra` settings.
async fn module(extra: &[(&str, &str)]) -> (inventory::InventoryModule, testkit::TestDatabase) {
    module_expiring(extra, None).await
}

/// [`module`], its reservations living `ttl_secs` when given: less than
/// the settings take (`inventory.reservation_ttl_secs` is at least 60), so
/// set after they were validated, for the tests of expiry only.
async fn module_expiring(
    extra: &[(&str, &str)],
    ttl_secs: Option<u64>,
) -> (inventory::InventoryModule, testkit::TestDatabase) {
    let db = test_database().await;
    let settings = test_settings(Some(db.url()), extra);
    let pool = app::database::module_pool(&settings, app::modules::ModuleName::Inventory, db.url())
        .unwrap();
    let mut own = settings.section::<inventory::Settings>().unwrap().clone();
    if let Some(ttl_secs) = ttl_secs {
        own.reservation_ttl_secs = ttl_secs;
    }
    (inventory::InventoryModule::new(pool, own), db)
}

async fn in_process() -> (Harness, testkit::TestDatabase) {
    let (module, db) = module(&[]).await;
    let harness = Harness {
        api: Arc::new(module),
        admin: caller(Role::Admin),
        service: caller(Role::Service),
        customer: caller(Role::Customer),
    };
    (harness, db)
}

/// The order module's service token for `app`: signed with the service
/// key, as the order module's calls carry it.
fn service_token(app: &TestApp) -> String {
    app::compose::service_tokens(&app.settings)
        .unwrap()
        .token()
        .unwrap()
}

/// The HTTP client talking to a real server over a fresh database.
async fn over_http() -> (Harness, TestApp) {
    let app = spawn_app().await;
    let api = module_client(&app.address, "inventory", InventoryClient::new);
    let (admin, customer) = bearer_contexts(&app);
    let service = kernel::CallContext::background().with_bearer_token(service_token(&app));
    let harness = Harness {
        api,
        admin,
        service,
        customer,
    };
    (harness, app)
}

mod local {
    inventory_api::inventory_contract_suite!(super::in_process);
}

mod http {
    inventory_api::inventory_contract_suite!(super::over_http);
}

fn receive(quantity: i32) -> Adjustment {
    Adjustment {
        quantity,
        reason: "receive".into(),
        low_stock_threshold: None,
        idempotency_key: None,
    }
}

/// SQL writing `count` active reservations of one unit of `sku`, each past
/// its time (a minute and more, a second apart), with their units held on
/// the stock row as a reserve holds them: much quicker than reserving them
/// through the module and waiting out their lifetime.
fn due_reservations(sku: &str, count: u32) -> String {
    format!(
        "CREATE TEMP TABLE due_{count} AS SELECT gen_random_uuid() AS order_id, \
         now() - make_interval(secs => 60 + g) AS expires_at FROM generate_series(1, {count}) g; \
         INSERT INTO inventory.reservations (order_id, status, expires_at) \
         SELECT order_id, 'active', expires_at FROM due_{count}; \
         INSERT INTO inventory.reservation_lines (order_id, sku, quantity) \
         SELECT order_id, '{sku}', 1 FROM due_{count}; \
         UPDATE inventory.stock SET reserved = reserved + {count} WHERE sku = '{sku}'; \
         DROP TABLE due_{count}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_reservations_never_oversell() {
    let (module, _db) = module(&[
        ("APP__INVENTORY__DATABASE__MAX_CONNECTIONS", "20"),
        ("APP__DATABASE__ACQUIRE_TIMEOUT_MS", "60000"),
    ])
    .await;
    let inventory = Arc::new(module);
    let admin = caller(Role::Admin);
    let service = caller(Role::Service);
    for round in 0..20 {
        let sku = Sku::parse(&format!("RUSH-{round}")).unwrap();
        inventory.adjust(&admin, &sku, receive(10)).await.unwrap();

        let attempts: Vec<_> = (0..200)
            .map(|_| {
                let inventory = Arc::clone(&inventory);
                let service = service.clone();
                let sku = sku.clone();
                tokio::spawn(async move {
                    let request = ReserveStock {
                        order_id: OrderId::generate(),
                        lines: vec![ReservationLine { sku, quantity: 1 }],
                    };
                    inventory.reserve(&service, request).await
                })
            })
            .collect();
        let mut won = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(reservation) => {
                    assert_eq!(reservation.status, ReservationStatus::Active);
                    won += 1;
                }
                Err(InventoryError::InsufficientStock(skus)) => {
                    assert_eq!(skus, vec![sku.to_string()])
                }
                Err(other) => panic!("round {round}: unexpected {other:?}"),
            }
        }
        assert_eq!(
            won, 10,
            "round {round}: exactly the stock on hand is reserved"
        );
        let level = inventory.stock(&admin, &sku).await.unwrap();
        assert_eq!(
            (level.on_hand, level.reserved, level.available),
            (10, 10, 0),
            "round {round}"
        );
    }
}

/// Expiry locks stock rows as a reservation does, one reservation's SKUs
/// at a time and in SKU order: two expired reservations, of `EXP-B` and
/// then of `EXP-A`, expire while a transaction holds `EXP-A` and then asks
/// for `EXP-B` (as a checkout of both reserves them). A batch in one
/// transaction held `EXP-B` while it waited for `EXP-A`: a deadlock, which
/// PostgreSQL broke by aborting one side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_never_deadlocks_with_a_reservation() {
    use diesel_async::{AsyncConnection as _, SimpleAsyncConnection as _};
    let (module, db) = module_expiring(&[], Some(1)).await;
    let (admin, service) = (caller(Role::Admin), caller(Role::Service));
    let (a, b) = (Sku::parse("EXP-A").unwrap(), Sku::parse("EXP-B").unwrap());
    for sku in [&a, &b] {
        module.adjust(&admin, sku, receive(3)).await.unwrap();
    }
    for sku in [&b, &a] {
        let lines = vec![ReservationLine {
            sku: sku.clone(),
            quantity: 1,
        }];
        let order_id = OrderId::generate();
        module
            .reserve(&service, ReserveStock { order_id, lines })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await; // EXP-B's expires first
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut checkout = diesel_async::AsyncPgConnection::establish(db.url())
        .await
        .unwrap();
    checkout
        .batch_execute("BEGIN; SELECT 1 FROM inventory.stock WHERE sku = 'EXP-A' FOR UPDATE")
        .await
        .unwrap();
    let expiring = {
        let module = module.clone();
        tokio::spawn(async move { module.expire_due().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    checkout
        .batch_execute("SELECT 1 FROM inventory.stock WHERE sku = 'EXP-B' FOR UPDATE; COMMIT")
        .await
        .expect("the checkout's second lock is granted: no deadlock");
    assert_eq!(expiring.await.unwrap().unwrap(), 2);
    for sku in [&a, &b] {
        assert_eq!(module.stock(&admin, sku).await.unwrap().available, 3);
    }
}

/// The lines of a reservation are in one order everywhere (bytes), whatever
/// the database's collation: a reservation read back compares equal to the
/// one asked again (a retried reserve is the same reservation, not a 409),
/// and its rows are locked in the order a reservation locks them. The test
/// database is `C`; the column is given a language's collation here, as a
/// database created with `en_US.UTF-8` would have it, where `A_1` sorts
/// before `A1` (bytes: after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_reservation_is_the_same_under_any_collation() {
    use diesel_async::{AsyncConnection as _, SimpleAsyncConnection as _};
    let (module, db) = module(&[]).await;
    let mut conn = diesel_async::AsyncPgConnection::establish(db.url())
        .await
        .unwrap();
    conn.batch_execute(
        "ALTER TABLE inventory.reservation_lines ALTER COLUMN sku TYPE text COLLATE \"en-x-icu\"",
    )
    .await
    .unwrap();
    let (admin, service) = (caller(Role::Admin), caller(Role::Service));
    let (a, b) = (Sku::parse("A1").unwrap(), Sku::parse("A_1").unwrap());
    for sku in [&a, &b] {
        module.adjust(&admin, sku, receive(3)).await.unwrap();
    }
    let order_id = OrderId::generate();
    let lines: Vec<ReservationLine> = [&b, &a]
        .into_iter()
        .map(|sku| ReservationLine {
            sku: sku.clone(),
            quantity: 1,
        })
        .collect();
    let first = module
        .reserve(
            &service,
            ReserveStock {
                order_id,
                lines: lines.clone(),
            },
        )
        .await
        .unwrap();
    let again = module
        .reserve(&service, ReserveStock { order_id, lines })
        .await
        .expect("the same reservation, not a conflict");
    assert_eq!(again, first);
    for sku in [&a, &b] {
        assert_eq!(module.stock(&admin, sku).await.unwrap().available, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_expire_and_give_their_stock_back() {
    let (module, _db) = module_expiring(&[], Some(3)).await;
    let (admin, service) = (caller(Role::Admin), caller(Role::Service));
    let sku = Sku::parse("TTL-1").unwrap();
    module.adjust(&admin, &sku, receive(3)).await.unwrap();
    let order = OrderId::generate();
    module
        .reserve(
            &service,
            ReserveStock {
                order_id: order,
                lines: vec![ReservationLine {
                    sku: sku.clone(),
                    quantity: 2,
                }],
            },
        )
        .await
        .unwrap();
    let reserved = std::time::Instant::now();
    let early = module.expire_due().await.unwrap();
    if reserved.elapsed() < Duration::from_secs(3) {
        assert_eq!(early, 0, "not yet");
    }
    let module = &module;
    crate::helpers::eventually("the reservation expired", || async move {
        (module.expire_due().await.unwrap() == 1).then_some(())
    })
    .await;
    assert!(
        reserved.elapsed() >= Duration::from_secs(2),
        "not before its time"
    );
    assert_eq!(
        module.reservation(&admin, order).await.unwrap().status,
        ReservationStatus::Expired
    );
    assert_eq!(module.stock(&admin, &sku).await.unwrap().available, 3);
    assert!(matches!(
        module.commit(&service, order).await.unwrap_err(),
        InventoryError::InvalidTransition {
            status: inventory_api::ReservationStatus::Expired,
            ..
        }
    ));
}

/// One pass expires every reservation due, however many: a pass capped at
/// 100, then the interval's sleep (30 s), expired some 200 a minute, and
/// after an outage of the order module thousands of expired reservations
/// kept their stock held for tens of minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pass_expires_every_reservation_due() {
    use diesel_async::{AsyncConnection as _, SimpleAsyncConnection as _};
    // A pass's time is bounded by the interval: a long one, so a slow
    // machine does not cut it short.
    let (module, db) = module(&[("APP__INVENTORY__EXPIRY_INTERVAL_SECS", "900")]).await;
    let admin = caller(Role::Admin);
    let sku = Sku::parse("MANY-1").unwrap();
    module.adjust(&admin, &sku, receive(300)).await.unwrap();
    let mut conn = diesel_async::AsyncPgConnection::establish(db.url())
        .await
        .unwrap();
    conn.batch_execute(&due_reservations("MANY-1", 250))
        .await
        .unwrap();
    assert_eq!(module.stock(&admin, &sku).await.unwrap().reserved, 250);
    assert_eq!(module.expire_due().await.unwrap(), 250, "all in one pass");
    let level = module.stock(&admin, &sku).await.unwrap();
    assert_eq!(
        (level.on_hand, level.reserved, level.available),
        (300, 0, 300)
    );
    assert_eq!(module.expire_due().await.unwrap(), 0, "none left");
}

/// A reservation whose expiry keeps failing is passed over, and those
/// behind it still expire: claimed oldest first, it stopped every pass
/// before any other expired, for good. Here the oldest one's unit was never
/// counted as reserved (written by hand), so giving it back would take its
/// SKU's reserved count below zero, which the CHECK refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_that_cannot_expire_holds_up_no_other() {
    use diesel_async::{AsyncConnection as _, SimpleAsyncConnection as _};
    let (module, db) = module(&[]).await;
    let admin = caller(Role::Admin);
    let (many, stuck) = (
        Sku::parse("MANY-2").unwrap(),
        Sku::parse("STUCK-1").unwrap(),
    );
    for sku in [&many, &stuck] {
        module.adjust(&admin, sku, receive(5)).await.unwrap();
    }
    let oldest = OrderId::generate();
    let mut conn = diesel_async::AsyncPgConnection::establish(db.url())
        .await
        .unwrap();
    conn.batch_execute(&format!(
        "INSERT INTO inventory.reservations (order_id, status, expires_at) \
         VALUES ('{oldest}', 'active', now() - interval '1 hour'); \
         INSERT INTO inventory.reservation_lines (order_id, sku, quantity) \
         VALUES ('{oldest}', 'STUCK-1', 1); {}",
        due_reservations("MANY-2", 3)
    ))
    .await
    .unwrap();
    assert_eq!(module.expire_due().await.unwrap(), 3, "the others expire");
    assert_eq!(module.stock(&admin, &many).await.unwrap().reserved, 0);
    assert_eq!(
        module.reservation(&admin, oldest).await.unwrap().status,
        ReservationStatus::Active,
        "passed over"
    );
    assert_eq!(module.stock(&admin, &stuck).await.unwrap().reserved, 0);
    assert_eq!(
        module.expire_due().await.unwrap(),
        0,
        "a pass without it ends"
    );
}

/// An adjustment sent again with its `Idempotency-Key` (its answer lost,
/// or a gateway's 502 `upstream_answer_broken`) is answered 200 with
/// `idempotent-replayed: true` and moves the stock once, also when the
/// requests race; the key with another quantity is a 422
/// `idempotency_key_reused`, and a key outside its form a 400
/// `idempotency_key_required`, as for `POST /orders`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adjustment_sent_again_with_its_idempotency_key_moves_the_stock_once() {
    let app = spawn_app_with(&[]).await;
    let admin = app.token(&[Role::Admin]);
    let adjust = |key: &str, quantity: i32| {
        app.client
            .post(app.url("/api/v1/inventory/keyed-1/adjustments"))
            .bearer_auth(&admin)
            .header("idempotency-key", key)
            .json(&serde_json::json!({"quantity": quantity, "reason": "receive"}))
            .send()
    };
    let first = adjust("delivery-1", 10).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let again = adjust("delivery-1", 10).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let level: Value = again.json().await.unwrap();
    assert_eq!(level["on_hand"], 10, "moved once: {level}");

    let racing = futures_util::future::join_all((0..4).map(|_| adjust("delivery-2", 5))).await;
    let mut made = 0;
    for answer in racing {
        let answer = answer.unwrap();
        assert_eq!(answer.status(), 200);
        if answer.headers().get("idempotent-replayed").is_none() {
            made += 1;
        }
    }
    assert_eq!(made, 1, "one of the racing requests made the adjustment");

    let reused = adjust("delivery-1", 11).await.unwrap();
    assert_problem(reused, 422, "idempotency_key_reused").await;
    for bad in ["", "two words"] {
        let refused = adjust(bad, 1).await.unwrap();
        assert_problem(refused, 400, "idempotency_key_required").await;
    }
    let level: Value = get_json(&app.client, app.url("/api/v1/inventory/keyed-1"), &admin).await;
    assert_eq!(level["on_hand"], 15, "{level}");
    let history: Value = get_json(
        &app.client,
        app.url("/api/v1/inventory/keyed-1/movements"),
        &admin,
    )
    .await;
    assert_eq!(
        history["items"].as_array().map(Vec::len),
        Some(2),
        "{history}"
    );
}

/// An adjustment that would take the units on hand past what the column
/// holds is a 422 naming the quantity, not the database's 500, and changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adjustment_past_the_largest_stock_is_422() {
    use diesel_async::RunQueryDsl as _;
    let app = spawn_app_with(&[]).await;
    let admin = app.token(&[Role::Admin]);
    let adjust = |quantity: i32| {
        app.client
            .post(app.url("/api/v1/inventory/huge-1/adjustments"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({"quantity": quantity, "reason": "receive"}))
            .send()
    };
    assert_eq!(adjust(10).await.unwrap().status(), 200);
    let mut db = app.db().await;
    diesel::sql_query("UPDATE inventory.stock SET on_hand = 2147000000 WHERE sku = 'HUGE-1'")
        .execute(&mut db)
        .await
        .unwrap();
    let refused = assert_problem(adjust(1_000_000).await.unwrap(), 422, "validation_failed").await;
    assert_eq!(refused["errors"][0]["field"], "quantity", "{refused}");
    // What fits still goes in; taking out still works.
    assert_eq!(adjust(483_647).await.unwrap().status(), 200);
    let level: Value = get_json(&app.client, app.url("/api/v1/inventory/huge-1"), &admin).await;
    assert_eq!(level["on_hand"], i64::from(i32::MAX), "{level}");
    assert_eq!(adjust(-1).await.unwrap().status(), 200);
}

/// Putting a sale back that would take the units on hand past what the
/// column holds is a 422 naming the lines, not the database's 500, and
/// changes nothing: the sale stays committed, the stock as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restock_past_the_largest_stock_is_422() {
    use diesel_async::RunQueryDsl as _;
    let app = spawn_app_with(&[]).await;
    let admin = app.token(&[Role::Admin]);
    let service = service_token(&app);
    let post = |path: String, body: Option<Value>| {
        // Stock is the admins'; reservations the order module's.
        let token = if path.contains("/reservations") {
            &service
        } else {
            &admin
        };
        let mut request = app.client.post(app.url(&path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move { request.send().await.unwrap() }
    };
    let received = post(
        "/api/v1/inventory/huge-2/adjustments".into(),
        Some(serde_json::json!({"quantity": 10, "reason": "receive"})),
    )
    .await;
    assert_eq!(received.status(), 200);
    let order = OrderId::generate();
    let reserved = post(
        "/api/v1/inventory/reservations".into(),
        Some(serde_json::json!({"order_id": order, "lines": [{"sku": "HUGE-2", "quantity": 3}]})),
    )
    .await;
    assert_eq!(reserved.status(), 201);
    let sold = post(
        format!("/api/v1/inventory/reservations/{order}/commit"),
        None,
    )
    .await;
    assert_eq!(sold.status(), 200);
    // Received again meanwhile, up to two units short of the most.
    let mut db = app.db().await;
    diesel::sql_query("UPDATE inventory.stock SET on_hand = 2147483645 WHERE sku = 'HUGE-2'")
        .execute(&mut db)
        .await
        .unwrap();
    let restock = format!("/api/v1/inventory/reservations/{order}/restock");
    let refused = assert_problem(post(restock.clone(), None).await, 422, "validation_failed").await;
    assert_eq!(refused["errors"][0]["field"], "lines", "{refused}");
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("HUGE-2"),
        "{refused}"
    );
    let level: Value = get_json(&app.client, app.url("/api/v1/inventory/huge-2"), &admin).await;
    assert_eq!(level["on_hand"], 2_147_483_645, "{level}");
    let reservation: Value = get_json(
        &app.client,
        app.url(&format!("/api/v1/inventory/reservations/{order}")),
        &admin,
    )
    .await;
    assert_eq!(reservation["status"], "committed", "{reservation}");
    // Once there is room, it goes back.
    diesel::sql_query("UPDATE inventory.stock SET on_hand = 2147483644 WHERE sku = 'HUGE-2'")
        .execute(&mut db)
        .await
        .unwrap();
    assert_eq!(post(restock, None).await.status(), 200);
    let level: Value = get_json(&app.client, app.url("/api/v1/inventory/huge-2"), &admin).await;
    assert_eq!(level["on_hand"], i64::from(i32::MAX), "{level}");
}

/// A SKU received for the first time below its threshold is low from the
/// start, and the admins hear of it as of a SKU going down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sku_received_below_its_threshold_is_announced_low() {
    let app = spawn_app_with(&[]).await;
    let admin = app.token(&[Role::Admin]);
    let received = app
        .client
        .post(app.url("/api/v1/inventory/bulb-1/adjustments"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"quantity": 3, "reason": "receive", "low_stock_threshold": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(received.status(), 200);
    eventually("a low-stock alert", || async {
        let all: Value = get_json(
            &app.client,
            app.url("/api/v1/notifications?limit=100"),
            &admin,
        )
        .await;
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["subject"] == "Low stock: BULB-1 (3 left)")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_and_out_of_stock_alert_the_admins() {
    let app = spawn_app_with(&[]).await;
    let admin = app.token(&[Role::Admin]);
    let service = service_token(&app);
    let post = |path: String, body: Value| {
        // Stock is the admins'; reservations the order module's.
        let token = if path.contains("/reservations") {
            &service
        } else {
            &admin
        };
        let request = app
            .client
            .post(app.url(&path))
            .bearer_auth(token)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let level: Value = post(
        "/api/v1/inventory/lamp-1/adjustments".into(),
        serde_json::json!({"quantity": 10, "reason": "receive", "low_stock_threshold": 3}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(level["sku"], "LAMP-1");
    assert_eq!(level["available"], 10);

    let order = OrderId::generate();
    let reserved = post(
        "/api/v1/inventory/reservations".into(),
        serde_json::json!({"order_id": order, "lines": [{"sku": "LAMP-1", "quantity": 8}]}),
    )
    .await;
    assert_eq!(reserved.status(), 201);
    let short = post(
        "/api/v1/inventory/reservations".into(),
        serde_json::json!({"order_id": OrderId::generate(), "lines": [{"sku": "LAMP-1", "quantity": 5}]}),
    )
    .await;
    let problem = crate::helpers::assert_problem(short, 409, "insufficient_stock").await;
    assert_eq!(problem["errors"][0]["message"], "LAMP-1");
    post(
        "/api/v1/inventory/reservations".into(),
        serde_json::json!({"order_id": OrderId::generate(), "lines": [{"sku": "LAMP-1", "quantity": 2}]}),
    )
    .await;

    let subjects = eventually("low and out of stock alerts", || async {
        let all: Value = get_json(
            &app.client,
            app.url("/api/v1/notifications?limit=100"),
            &admin,
        )
        .await;
        let subjects: Vec<String> = all["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["subject"].as_str().unwrap().to_owned())
            .filter(|s| s.contains("LAMP-1"))
            .collect();
        (subjects.len() == 2).then_some(subjects)
    })
    .await;
    assert!(
        subjects.contains(&"Low stock: LAMP-1 (2 left)".to_owned()),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&"Out of stock: LAMP-1".to_owned()),
        "{subjects:?}"
    );

    // The history shows every change, and the stock adds up.
    let history: Value = get_json(
        &app.client,
        app.url("/api/v1/inventory/LAMP-1/movements"),
        &admin,
    )
    .await;
    let kinds: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["reservation", "reservation", "adjustment"]);
    let stock: Value = get_json(&app.client, app.url("/api/v1/inventory/LAMP-1"), &admin).await;
    assert_eq!(
        (
            stock["on_hand"].as_i64(),
            stock["reserved"].as_i64(),
            stock["available"].as_i64()
        ),
        (Some(10), Some(10), Some(0))
    );
}

/// An adjustment receiving `quantity` units, the low-stock threshold set
/// to 5.
fn receive_under_5(quantity: i32) -> Adjustment {
    Adjustment {
        low_stock_threshold: Some(5),
        ..receive(quantity)
    }
}

/// Reserves `quantity` units of `sku` for a new order, as a checkout does.
async fn reserve_for_an_order(
    module: &inventory::InventoryModule,
    sku: &Sku,
    quantity: i32,
) -> OrderId {
    let order_id = OrderId::generate();
    let lines = vec![ReservationLine {
        sku: sku.clone(),
        quantity,
    }];
    module
        .reserve(&caller(Role::Service), ReserveStock { order_id, lines })
        .await
        .unwrap();
    order_id
}

/// How many low- and out-of-stock events of `sku` the inventory wrote to
/// its outbox (each one an email to the admins).
async fn alerts(db: &testkit::TestDatabase, sku: &Sku) -> (i64, i64) {
    use diesel_async::{AsyncConnection as _, RunQueryDsl as _};
    use inventory_api::events::{LowStock, OutOfStock};
    use kernel::IntegrationEvent;
    let mut conn = diesel_async::AsyncPgConnection::establish(db.url())
        .await
        .unwrap();
    let mut counts = [0; 2];
    for (n, event_type) in counts.iter_mut().zip([
        <LowStock as IntegrationEvent>::TYPE,
        <OutOfStock as IntegrationEvent>::TYPE,
    ]) {
        *n = diesel::sql_query(
            "SELECT count(*) AS n FROM inventory.outbox WHERE aggregate_id = $1 AND event_type = $2",
        )
        .bind::<diesel::sql_types::Text, _>(sku.as_str())
        .bind::<diesel::sql_types::Text, _>(event_type)
        .get_result::<crate::helpers::Count>(&mut conn)
        .await
        .unwrap()
        .n;
    }
    (counts[0], counts[1])
}

/// A checkout reserving a SKU near its threshold, its card declined and
/// its units released, then the next checkout reserving them again: low
/// stock is raised by the first reserve only. Each reserve raised it (and
/// mailed the admins) again, for every checkout that failed or expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_stock_is_raised_once_however_often_reservations_come_and_go() {
    let (module, db) = module(&[]).await;
    let (admin, service) = (caller(Role::Admin), caller(Role::Service));
    let sku = Sku::parse("ALERT-LOW").unwrap();
    module
        .adjust(&admin, &sku, receive_under_5(6))
        .await
        .unwrap();
    assert_eq!(alerts(&db, &sku).await, (0, 0), "6 is above 5");

    let declined = reserve_for_an_order(&module, &sku, 2).await;
    assert_eq!(alerts(&db, &sku).await, (1, 0), "4 left: low");
    module.release(&service, declined).await.unwrap();
    assert_eq!(module.stock(&admin, &sku).await.unwrap().available, 6);
    for _ in 0..3 {
        let again = reserve_for_an_order(&module, &sku, 2).await;
        module.release(&service, again).await.unwrap();
    }
    reserve_for_an_order(&module, &sku, 1).await;
    reserve_for_an_order(&module, &sku, 1).await;
    assert_eq!(module.stock(&admin, &sku).await.unwrap().available, 4);
    assert_eq!(
        alerts(&db, &sku).await,
        (1, 0),
        "the fall was told once, whatever went round since"
    );
}

/// The last units reserved, released and reserved again: out of stock is
/// raised once for that fall (it was raised on every reserve that took the
/// last unit). Units brought in start a new fall, whose end is told again;
/// low stock before it too when they took the SKU above its threshold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_stock_is_raised_once_a_fall_however_often_the_last_units_go_round() {
    let (module, db) = module(&[]).await;
    let (admin, service) = (caller(Role::Admin), caller(Role::Service));
    let sku = Sku::parse("ALERT-OUT").unwrap();
    module
        .adjust(&admin, &sku, receive_under_5(3))
        .await
        .unwrap();
    assert_eq!(alerts(&db, &sku).await, (1, 0), "received low");

    let first = reserve_for_an_order(&module, &sku, 3).await;
    assert_eq!(alerts(&db, &sku).await, (1, 1), "out after low");
    module.release(&service, first).await.unwrap();
    let second = reserve_for_an_order(&module, &sku, 3).await;
    module.release(&service, second).await.unwrap();
    reserve_for_an_order(&module, &sku, 2).await;
    reserve_for_an_order(&module, &sku, 1).await;
    assert_eq!(module.stock(&admin, &sku).await.unwrap().available, 0);
    assert_eq!(alerts(&db, &sku).await, (1, 1), "drained twice, one fall");

    // Two units received, still under the threshold: no low stock (it was
    // told), but their going is a new out of stock.
    module.adjust(&admin, &sku, receive(2)).await.unwrap();
    assert_eq!(alerts(&db, &sku).await, (1, 1));
    reserve_for_an_order(&module, &sku, 2).await;
    assert_eq!(
        alerts(&db, &sku).await,
        (1, 2),
        "out again after units came in"
    );

    // Received above the threshold: the next fall is a new one, low then out.
    module.adjust(&admin, &sku, receive(8)).await.unwrap();
    assert_eq!(alerts(&db, &sku).await, (1, 2), "8 is above 5");
    let third = reserve_for_an_order(&module, &sku, 4).await;
    assert_eq!(alerts(&db, &sku).await, (2, 2), "4 left: low");
    reserve_for_an_order(&module, &sku, 4).await;
    module.release(&service, third).await.unwrap();
    reserve_for_an_order(&module, &sku, 4).await;
    assert_eq!(module.stock(&admin, &sku).await.unwrap().available, 0);
    assert_eq!(alerts(&db, &sku).await, (2, 3), "one out of stock a fall");
}

/// Units brought in that take a SKU above its threshold (a receipt: an
/// adjustment) start a new fall: the next one raises low stock again.
/// Units a release gives back do not, nor sold units put back by a
/// cancelled order's restock (it undoes a sale, as a release undoes a
/// reserve: that fall was told already).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_brought_in_above_the_threshold_let_the_next_fall_alert_again() {
    let (module, db) = module(&[]).await;
    let (admin, service) = (caller(Role::Admin), caller(Role::Service));
    let sku = Sku::parse("ALERT-AGAIN").unwrap();
    module
        .adjust(&admin, &sku, receive_under_5(6))
        .await
        .unwrap();
    let declined = reserve_for_an_order(&module, &sku, 2).await;
    module.release(&service, declined).await.unwrap();
    let sold = reserve_for_an_order(&module, &sku, 2).await;
    assert_eq!(alerts(&db, &sku).await, (1, 0), "a release starts no fall");

    // Received: 8 available, above 5.
    module.adjust(&admin, &sku, receive(4)).await.unwrap();
    assert_eq!(module.stock(&admin, &sku).await.unwrap().available, 8);
    assert_eq!(alerts(&db, &sku).await, (1, 0));
    let held = reserve_for_an_order(&module, &sku, 3).await;
    assert_eq!(
        alerts(&db, &sku).await,
        (2, 0),
        "5 left after a receipt: low"
    );

    // Sold, then put back on the shelf (the order cancelled): 7
    // available, above 5, and the next fall is no news.
    module.commit(&service, sold).await.unwrap();
    module.restock(&service, sold).await.unwrap();
    assert_eq!(module.stock(&admin, &sku).await.unwrap().available, 7);
    assert_eq!(alerts(&db, &sku).await, (2, 0));
    reserve_for_an_order(&module, &sku, 2).await;
    assert_eq!(
        alerts(&db, &sku).await,
        (2, 0),
        "5 left after a cancelled order's return: told already"
    );

    module.release(&service, held).await.unwrap();
    reserve_for_an_order(&module, &sku, 3).await;
    assert_eq!(module.stock(&admin, &sku).await.unwrap().available, 5);
    assert_eq!(alerts(&db, &sku).await, (2, 0), "released and taken again");
}

/// Reservations are the order module's: its saga owns them. An admin's
/// reserve, commit, release or restock is a 403 and changes nothing (a
/// restock of a shipped order's units while the order stays confirmed; a
/// reserve under an order's id before its checkout); the service token
/// makes and moves them, and admins still read them and the stock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_order_module_makes_and_moves_reservations() {
    let app = spawn_app_with(&[]).await;
    let admin = app.token(&[Role::Admin]);
    let service = service_token(&app);
    let post = |path: String, token: &str, body: Option<Value>| {
        let mut request = app.client.post(app.url(&path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move { request.send().await.unwrap() }
    };
    let received = post(
        "/api/v1/inventory/own-2/adjustments".into(),
        &admin,
        Some(serde_json::json!({"quantity": 10, "reason": "receive"})),
    )
    .await;
    assert_eq!(received.status(), 200);
    let level = || async {
        let url = app.url("/api/v1/inventory/own-2");
        let level: Value = get_json(&app.client, url, &admin).await;
        (level["on_hand"].as_i64(), level["reserved"].as_i64())
    };
    let reservations = "/api/v1/inventory/reservations".to_owned();
    // `POST /inventory/reservations` (a reserve of 3 units of OWN-2 for
    // `order`), or `.../{order}/{step}`, as the bearer of `token`.
    let call = |order: OrderId, step: &str, token: &str| {
        if step == "reserve" {
            let lines = serde_json::json!([{"sku": "OWN-2", "quantity": 3}]);
            let body = serde_json::json!({"order_id": order, "lines": lines});
            post(reservations.clone(), token, Some(body))
        } else {
            post(format!("{reservations}/{order}/{step}"), token, None)
        }
    };
    let refused = |order: OrderId, step: &str| {
        let sent = call(order, step, &admin);
        async move { assert_problem(sent.await, 403, "forbidden").await }
    };

    let sold = OrderId::generate();
    refused(sold, "reserve").await;
    assert_eq!(level().await, (Some(10), Some(0)), "nothing held");
    assert_eq!(call(sold, "reserve", &service).await.status(), 201);
    refused(sold, "commit").await;
    assert_eq!(level().await, (Some(10), Some(3)), "still held");
    assert_eq!(call(sold, "commit", &service).await.status(), 200);
    refused(sold, "restock").await;
    assert_eq!(level().await, (Some(7), Some(0)), "still sold");
    let url = app.url(&format!("{reservations}/{sold}"));
    let reservation: Value = get_json(&app.client, url, &admin).await;
    assert_eq!(reservation["status"], "committed", "{reservation}");
    assert_eq!(call(sold, "restock", &service).await.status(), 200);
    assert_eq!(level().await, (Some(10), Some(0)));

    let dropped = OrderId::generate();
    assert_eq!(call(dropped, "reserve", &service).await.status(), 201);
    refused(dropped, "release").await;
    assert_eq!(level().await, (Some(10), Some(3)), "still held");
    assert_eq!(call(dropped, "release", &service).await.status(), 200);
    assert_eq!(level().await, (Some(10), Some(0)));
    // An admin's release of an order with no reservation fences nothing off.
    let later = OrderId::generate();
    refused(later, "release").await;
    assert_eq!(call(later, "reserve", &service).await.status(), 201);
}

/// A reserve asked again (the same lines) after its sale was put back is
/// a 409 naming the status, not a 201 answering it as held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserve_replayed_after_its_return_is_409() {
    let app = spawn_app_with(&[]).await;
    let admin = app.token(&[Role::Admin]);
    let service = service_token(&app);
    let post = |path: String, token: &str, body: Option<Value>| {
        let mut request = app.client.post(app.url(&path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move { request.send().await.unwrap() }
    };
    let received = post(
        "/api/v1/inventory/back-2/adjustments".into(),
        &admin,
        Some(serde_json::json!({"quantity": 5, "reason": "receive"})),
    )
    .await;
    assert_eq!(received.status(), 200);
    let order = OrderId::generate();
    let request =
        serde_json::json!({"order_id": order, "lines": [{"sku": "BACK-2", "quantity": 2}]});
    let reservations = "/api/v1/inventory/reservations".to_owned();
    let reserved = post(reservations.clone(), &service, Some(request.clone())).await;
    assert_eq!(reserved.status(), 201);
    for step in ["commit", "restock"] {
        let path = format!("{reservations}/{order}/{step}");
        assert_eq!(post(path, &service, None).await.status(), 200, "{step}");
    }
    let replayed = post(reservations, &service, Some(request)).await;
    let refused = assert_problem(replayed, 409, "invalid_reservation_transition").await;
    assert_eq!(refused["current_status"], "returned", "{refused}");
    let level: Value = get_json(&app.client, app.url("/api/v1/inventory/back-2"), &admin).await;
    assert_eq!(
        (level["on_hand"].as_i64(), level["reserved"].as_i64()),
        (Some(5), Some(0)),
        "nothing held: {level}"
    );
}

/// A cursor of one SKU's movements is refused on another SKU's (400
/// `invalid_cursor`), and goes on with its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_movements_cursor_of_another_sku_is_400() {
    let app = spawn_app_with(&[]).await;
    let admin = app.token(&[Role::Admin]);
    for sku in ["cur-1", "cur-1", "cur-2", "cur-2"] {
        let received = app
            .client
            .post(app.url(&format!("/api/v1/inventory/{sku}/adjustments")))
            .bearer_auth(&admin)
            .json(&serde_json::json!({"quantity": 1, "reason": "receive"}))
            .send()
            .await
            .unwrap();
        assert_eq!(received.status(), 200);
    }
    let first: Value = get_json(
        &app.client,
        app.url("/api/v1/inventory/cur-1/movements?limit=1"),
        &admin,
    )
    .await;
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let page = |sku: &str| {
        app.client
            .get(app.url(&format!("/api/v1/inventory/{sku}/movements")))
            .query(&[("limit", "1"), ("cursor", cursor)])
            .bearer_auth(&admin)
            .send()
    };
    assert_problem(page("cur-2").await.unwrap(), 400, "invalid_cursor").await;
    let rest = page("cur-1").await.unwrap();
    assert_eq!(rest.status(), 200);
    let rest: Value = rest.json().await.unwrap();
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(1), "{rest}");
    assert_eq!(rest["next_cursor"], Value::Null, "{rest}");
}
