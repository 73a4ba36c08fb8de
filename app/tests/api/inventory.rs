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
    assert_problem, caller, contract_over_http, eventually, get_json, spawn_app_with,
    test_database, test_settings,
};

/// The in-process module over a fresh database, with `extra` settings.
async fn module(extra: &[(&str, &str)]) -> (inventory::InventoryModule, testkit::TestDatabase) {
    let db = test_database().await;
    let settings = test_settings(Some(db.url()), extra);
    let pool = app::database::module_pool(&settings, app::modules::ModuleName::Inventory, db.url())
        .unwrap();
    (
        inventory::InventoryModule::new(
            pool,
            settings.section::<inventory::Settings>().unwrap().clone(),
        ),
        db,
    )
}

async fn in_process() -> (Harness, testkit::TestDatabase) {
    let (module, db) = module(&[]).await;
    let harness = Harness {
        api: Arc::new(module),
        admin: caller(Role::Admin),
        customer: caller(Role::Customer),
    };
    (harness, db)
}

contract_over_http!("inventory", InventoryClient::new);

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
    }
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
    for round in 0..20 {
        let sku = Sku::parse(&format!("RUSH-{round}")).unwrap();
        inventory.adjust(&admin, &sku, receive(10)).await.unwrap();

        let attempts: Vec<_> = (0..200)
            .map(|_| {
                let inventory = Arc::clone(&inventory);
                let admin = admin.clone();
                let sku = sku.clone();
                tokio::spawn(async move {
                    let request = ReserveStock {
                        order_id: OrderId::generate(),
                        lines: vec![ReservationLine { sku, quantity: 1 }],
                    };
                    inventory.reserve(&admin, request).await
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
    let (module, db) = module(&[("APP__INVENTORY__RESERVATION_TTL_SECS", "1")]).await;
    let admin = caller(Role::Admin);
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
            .reserve(&admin, ReserveStock { order_id, lines })
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
    let admin = caller(Role::Admin);
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
            &admin,
            ReserveStock {
                order_id,
                lines: lines.clone(),
            },
        )
        .await
        .unwrap();
    let again = module
        .reserve(&admin, ReserveStock { order_id, lines })
        .await
        .expect("the same reservation, not a conflict");
    assert_eq!(again, first);
    for sku in [&a, &b] {
        assert_eq!(module.stock(&admin, sku).await.unwrap().available, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_expire_and_give_their_stock_back() {
    let (module, _db) = module(&[("APP__INVENTORY__RESERVATION_TTL_SECS", "3")]).await;
    let admin = caller(Role::Admin);
    let sku = Sku::parse("TTL-1").unwrap();
    module.adjust(&admin, &sku, receive(3)).await.unwrap();
    let order = OrderId::generate();
    module
        .reserve(
            &admin,
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
        module.commit(&admin, order).await.unwrap_err(),
        InventoryError::InvalidTransition {
            status: inventory_api::ReservationStatus::Expired,
            ..
        }
    ));
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
    let post = |path: String, body: Option<Value>| {
        let mut request = app.client.post(app.url(&path)).bearer_auth(&admin);
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
    let post = |path: String, body: Value| {
        let request = app
            .client
            .post(app.url(&path))
            .bearer_auth(&admin)
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
