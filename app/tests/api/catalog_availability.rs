//! The catalog's availability read model, following the inventory's stock events.

use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use kernel::Role;
use serde_json::{Value, json};

use crate::helpers::{TestApp, create, eventually, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_follows_inventory_events() {
    let app = spawn_app().await;
    let (url, product) = create(&app, "AV-1").await;
    assert_eq!(product["availability"], "unknown");
    let post = |path: &str, body: Value| {
        let request = app
            .client
            .post(app.url(path))
            .bearer_auth(stock_caller(&app, path))
            .json(&body);
        async move { assert!(request.send().await.unwrap().status().is_success()) }
    };
    let reserve = |quantity: i32| {
        post(
            "/api/v1/inventory/reservations",
            json!({"order_id": uuid::Uuid::now_v7(), "lines": [{"sku": "AV-1", "quantity": quantity}]}),
        )
    };
    // How many products the in-stock listing shows.
    let listed_in_stock = || async {
        let listed: Value = app
            .get("/api/v1/products?in_stock=true")
            .await
            .json()
            .await
            .unwrap();
        listed["items"].as_array().unwrap().len()
    };
    let availability = |expected: &'static str| {
        let client = app.client.clone();
        let url = url.clone();
        async move {
            eventually(expected, || async {
                let p: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
                (p["availability"] == expected).then_some(())
            })
            .await;
        }
    };

    post(
        "/api/v1/inventory/AV-1/adjustments",
        json!({"quantity": 10, "reason": "receive", "low_stock_threshold": 3}),
    )
    .await;
    availability("in_stock").await;
    reserve(8).await;
    availability("low_stock").await;
    assert_eq!(
        listed_in_stock().await,
        1,
        "low stock still counts as in stock"
    );
    reserve(2).await;
    availability("out_of_stock").await;
    assert_eq!(listed_in_stock().await, 0);
}

#[derive(diesel::QueryableByName)]
struct Version {
    #[diesel(sql_type = Text)]
    v: String,
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// The row version (`xmin`) of the product `sku`: it changes when the row is
/// rewritten.
async fn row_version(app: &TestApp, sku: &str) -> String {
    diesel::sql_query("SELECT xmin::text AS v FROM catalog.products WHERE sku = $1")
        .bind::<Text, _>(sku)
        .get_result::<Version>(&mut app.db().await)
        .await
        .unwrap()
        .v
}

/// Waits until the catalog has handled `n` events.
async fn catalog_handled(app: &TestApp, n: i64) {
    eventually("the stock events handled by the catalog", || async {
        let count = diesel::sql_query("SELECT count(*) AS n FROM catalog.inbox")
            .get_result::<Count>(&mut app.db().await)
            .await
            .unwrap()
            .n;
        (count >= n).then_some(())
    })
    .await;
}

/// A token for POST `path` of the inventory: an admin's for stock, the
/// order module's (the service token) for reservations, which only it
/// makes.
fn stock_caller(app: &TestApp, path: &str) -> String {
    if path.contains("/reservations") {
        app::compose::service_tokens(&app.settings)
            .unwrap()
            .token()
            .unwrap()
    } else {
        app.token(&[Role::Admin])
    }
}

/// POST `body` to `path` as the one who may ([`stock_caller`]); it must
/// succeed.
async fn stock_post(app: &TestApp, path: &str, body: Value) {
    let response = app
        .client
        .post(app.url(path))
        .bearer_auth(stock_caller(app, path))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

/// A stock change that leaves the availability as it was writes nothing in
/// the catalog (the row keeps its version, the cached entry stays); one that
/// changes it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_availability_rewrites_nothing() {
    let app = spawn_app().await;
    create(&app, "AV-2").await;
    stock_post(
        &app,
        "/api/v1/inventory/AV-2/adjustments",
        json!({"quantity": 10, "reason": "receive", "low_stock_threshold": 3}),
    )
    .await;
    catalog_handled(&app, 1).await;
    let in_stock = row_version(&app, "AV-2").await;
    stock_post(
        &app,
        "/api/v1/inventory/reservations",
        json!({"order_id": uuid::Uuid::now_v7(), "lines": [{"sku": "AV-2", "quantity": 1}]}),
    )
    .await;
    catalog_handled(&app, 2).await;
    assert_eq!(
        row_version(&app, "AV-2").await,
        in_stock,
        "still in stock: not rewritten"
    );
    stock_post(
        &app,
        "/api/v1/inventory/reservations",
        json!({"order_id": uuid::Uuid::now_v7(), "lines": [{"sku": "AV-2", "quantity": 6}]}),
    )
    .await;
    catalog_handled(&app, 3).await;
    assert_ne!(
        row_version(&app, "AV-2").await,
        in_stock,
        "low stock now: rewritten"
    );
}

/// Stock received before its product exists is not lost: the product,
/// created afterwards, starts with the availability the inventory
/// announced (it was `unknown`, hidden from in-stock listings, until the
/// SKU's next stock movement).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_created_after_its_stock_starts_with_its_availability() {
    let app = spawn_app().await;
    let admin = app.token(&[Role::Admin]);
    let received = app
        .client
        .post(app.url("/api/v1/inventory/EARLY-1/adjustments"))
        .bearer_auth(&admin)
        .json(&json!({"quantity": 10, "reason": "receive"}))
        .send()
        .await
        .unwrap();
    assert_eq!(received.status(), 200);
    eventually("the level announced to the catalog", || async {
        (crate::helpers::count(
            &app,
            "SELECT count(*) AS n FROM catalog.sku_availability WHERE sku = 'EARLY-1'",
        )
        .await
            == 1)
            .then_some(())
    })
    .await;
    let (_, product) = create(&app, "EARLY-1").await;
    assert_eq!(product["availability"], "in_stock", "{product}");
    let listed: Value = app
        .get("/api/v1/products?in_stock=true")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
}

/// A product created while the first stock event of its SKU is handled
/// still ends with the level announced: here its insert stays uncommitted
/// while the stock arrives and its event is handled (the handler waits for
/// the insert's lock on the SKU's level), then commits. Before, the handler
/// read no product, the product no level, and it stayed `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_created_while_its_first_stock_event_is_handled_gets_the_level() {
    use diesel_async::SimpleAsyncConnection as _;
    let app = spawn_app().await;
    let admin = app.token(&[Role::Admin]);
    let mut creating = app.db().await;
    creating
        .batch_execute(
            "BEGIN; INSERT INTO catalog.products (id, sku, name, price_amount_minor, price_currency) \
             VALUES (gen_random_uuid(), 'RACE-1', 'Race', 100, 'EUR')",
        )
        .await
        .unwrap();
    let received = app
        .client
        .post(app.url("/api/v1/inventory/RACE-1/adjustments"))
        .bearer_auth(&admin)
        .json(&json!({"quantity": 10, "reason": "receive"}))
        .send()
        .await
        .unwrap();
    assert_eq!(received.status(), 200);
    // Long enough for the event to be relayed and handled (or to wait).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    creating.batch_execute("COMMIT").await.unwrap();
    eventually("the product in stock", || async {
        let listed: Value = app
            .get("/api/v1/products?in_stock=true")
            .await
            .json()
            .await
            .unwrap();
        (listed["items"].as_array().unwrap().len() == 1).then_some(())
    })
    .await;
}
