//! The checkout saga in one process: orders confirmed, failed with the
//! stock given back, cancelled with a refund, Stripe-style idempotency keys,
//! the event-sourced timeline and its projection, and concurrency (the last
//! units, the same key many times).

use std::time::Duration;

use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use kernel::Role;
use payment_sandbox::cards;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, assert_problem, eventually, spawn_app_with, until_done};

/// Checkout helpers shared by the saga suites (here, crash, extracted).
pub mod shop {
    use super::*;

    /// GET `url` as the bearer of `token`; the JSON answer.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        client: &reqwest::Client,
        url: impl reqwest::IntoUrl,
        token: impl std::fmt::Display,
    ) -> T {
        client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// POST to `url` (no body) as the bearer of `token`; the JSON answer.
    pub async fn post_json(
        client: &reqwest::Client,
        url: impl reqwest::IntoUrl,
        token: impl std::fmt::Display,
    ) -> Value {
        client
            .post(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A token for the customer `id`, signed with `settings`' key.
    pub fn customer_token(settings: &app::Settings, id: Uuid) -> String {
        let key = app::compose::signing_key(settings).unwrap();
        auth::Issuer::new(key, settings.auth.policy())
            .issue(id, &[Role::Customer])
            .unwrap()
            .token
    }

    /// Creates a product priced `price_minor` EUR and stocks `units`;
    /// returns its id.
    pub async fn stocked_product(
        client: &reqwest::Client,
        base: &str,
        admin: &str,
        sku: &str,
        price_minor: i64,
        units: i32,
    ) -> String {
        let response = client
            .post(format!("{base}/api/v1/products"))
            .bearer_auth(admin)
            .json(&json!({"sku": sku, "name": format!("Product {sku}"),
                "price": {"amount_minor": price_minor, "currency": "EUR"}}))
            .send()
            .await
            .unwrap();
        let product: Value = response.json().await.unwrap();
        let id = product["id"]
            .as_str()
            .unwrap_or_else(|| panic!("product not created: {product}"))
            .to_owned();
        let stocked = client
            .post(format!("{base}/api/v1/inventory/{sku}/adjustments"))
            .bearer_auth(admin)
            .json(&json!({"quantity": units, "reason": "receive"}))
            .send()
            .await
            .unwrap();
        assert_eq!(stocked.status(), 200, "{}", stocked.text().await.unwrap());
        id
    }

    /// Puts `quantity` of `product` in the cart of the token's customer.
    pub async fn fill_cart(
        client: &reqwest::Client,
        base: &str,
        token: &str,
        product: &str,
        quantity: i32,
    ) {
        let response = client
            .put(format!("{base}/api/v1/cart"))
            .bearer_auth(token)
            .json(&json!({"items": [{"product_id": product, "quantity": quantity}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    /// `POST /orders` with `key` and `card`.
    pub async fn place(
        client: &reqwest::Client,
        base: &str,
        token: &str,
        key: &str,
        card: &str,
    ) -> reqwest::Response {
        client
            .post(format!("{base}/api/v1/orders"))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&json!({"payment_method": {"card_number": card}}))
            .send()
            .await
            .unwrap()
    }

    /// Polls the order until it is settled (confirmed, failed, cancelled).
    pub async fn settled(client: &reqwest::Client, base: &str, token: &str, id: &str) -> Value {
        eventually(&format!("order {id} settles"), || async {
            let order: Value = client
                .get(format!("{base}/api/v1/orders/{id}"))
                .bearer_auth(token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            matches!(
                order["status"].as_str(),
                Some("confirmed" | "failed" | "cancelled")
            )
            .then_some(order)
        })
        .await
    }

    /// `(on_hand, reserved)` of a SKU.
    pub async fn stock(client: &reqwest::Client, base: &str, admin: &str, sku: &str) -> (i64, i64) {
        let level: Value = get_json(client, format!("{base}/api/v1/inventory/{sku}"), admin).await;
        (
            level["on_hand"].as_i64().unwrap(),
            level["reserved"].as_i64().unwrap(),
        )
    }

    /// The kinds of an order's timeline, in order.
    pub async fn timeline(
        client: &reqwest::Client,
        base: &str,
        token: &str,
        id: &str,
    ) -> Vec<String> {
        let entries: Vec<Value> =
            get_json(client, format!("{base}/api/v1/orders/{id}/timeline"), token).await;
        entries
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    }
}

use shop::*;

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(&mut app.db().await)
        .await
        .unwrap()
        .n
}

/// Captures in the payment ledger, all orders.
async fn captures(app: &TestApp) -> i64 {
    count(
        app,
        "SELECT count(*) AS n FROM payment.ledger WHERE kind = 'captured'",
    )
    .await
}

struct Scene {
    app: TestApp,
    admin: String,
    customer: Uuid,
    token: String,
    product: String,
}

async fn scene(sku: &str, units: i32) -> Scene {
    scene_with(sku, units, &[]).await
}

async fn scene_with(sku: &str, units: i32, extra: &[(&str, &str)]) -> Scene {
    let app = spawn_app_with(extra).await;
    let admin = app.token(&[Role::Admin]);
    let product = stocked_product(&app.client, &app.address, &admin, sku, 1299, units).await;
    let customer = Uuid::now_v7();
    let token = customer_token(&app.settings, customer);
    Scene {
        app,
        admin,
        customer,
        token,
        product,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_confirms_the_order_sells_the_stock_and_charges_once() {
    let Scene {
        app,
        admin,
        customer,
        token,
        product,
    } = scene("CHK-1", 5).await;
    let (client, base) = (&app.client, app.address.as_str());
    fill_cart(client, base, &token, &product, 2).await;
    let cart: Value = get_json(client, app.url("/api/v1/cart"), &token).await;
    assert_eq!(cart["items"][0]["quantity"], 2);

    let response = place(client, base, &token, "key-1", cards::SUCCEEDS).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["status"], "confirmed", "{order}");
    assert_eq!(order["customer_id"], customer.to_string());
    assert_eq!(
        order["total"],
        json!({"amount_minor": 2598, "currency": "EUR"})
    );
    assert_eq!(order["lines"][0]["unit_price"]["amount_minor"], 1299);
    assert_eq!(order["card_last4"], "4242");
    let id = order["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/v1/orders/{id}"));

    assert_eq!(stock(client, base, &admin, "CHK-1").await, (3, 0));
    let payment: Value = get_json(
        client,
        app.url(&format!(
            "/api/v1/payments/{}",
            order["payment_id"].as_str().unwrap()
        )),
        &token,
    )
    .await;
    assert_eq!(payment["status"], "captured", "{payment}");
    let ledger: Vec<&str> = payment["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(ledger, ["authorized", "captured"]);
    assert_eq!(
        timeline(client, base, &token, id).await,
        [
            "placed",
            "stock_reserved",
            "payment_authorized",
            "stock_committed",
            "payment_captured",
            "confirmed"
        ]
    );
    // The cart was ordered, so it is empty now.
    let cart: Value = get_json(client, app.url("/api/v1/cart"), &token).await;
    assert_eq!(cart["items"], json!([]));

    // Another customer sees nothing of it; the owner lists it.
    let stranger = app.token(&[Role::Customer]);
    for path in [
        format!("/api/v1/orders/{id}"),
        format!("/api/v1/orders/{id}/timeline"),
    ] {
        let response = client
            .get(app.url(&path))
            .bearer_auth(&stranger)
            .send()
            .await
            .unwrap();
        assert_problem(response, 404, "order_not_found").await;
    }
    let response = client
        .get(app.url(&format!(
            "/api/v1/payments/{}",
            order["payment_id"].as_str().unwrap()
        )))
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "payment_not_found").await;
    let mine: Value = get_json(client, app.url("/api/v1/orders?limit=10"), &token).await;
    assert_eq!(mine["items"][0]["id"], id);
    assert_eq!(mine["next_cursor"], Value::Null);
    let response = client
        .get(app.url("/api/v1/orders?cursor=not-a-cursor"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "invalid_cursor").await;

    // Shipping is for admins, then the order can no longer be cancelled.
    let response = client
        .post(app.url(&format!("/api/v1/orders/{id}/ship")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let shipped: Value = post_json(
        client,
        app.url(&format!("/api/v1/orders/{id}/ship")),
        &admin,
    )
    .await;
    assert_eq!(shipped["status"], "shipped");
    let response = client
        .post(app.url(&format!("/api/v1/orders/{id}/cancel")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_problem(response, 409, "invalid_order_transition").await;

    // The full card number is nowhere in the database.
    let leaks = count(
        &app,
        "SELECT (SELECT count(*) FROM orders.order_events WHERE data::text LIKE '%4242424242424242%') \
         + (SELECT count(*) FROM orders.orders WHERE state::text LIKE '%4242424242424242%') \
         + (SELECT count(*) FROM orders.sagas WHERE payment_method LIKE '%4242424242424242%') \
         + (SELECT count(*) FROM orders.idempotency_keys WHERE response_body::text LIKE '%4242424242424242%' OR fingerprint LIKE '%4242424242424242%') \
         + (SELECT count(*) FROM payment.payments WHERE payment_method LIKE '%4242424242424242%') AS n",
    )
    .await;
    assert_eq!(leaks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_fails_the_order_and_gives_the_stock_back() {
    let Scene {
        app,
        admin,
        token,
        product,
        ..
    } = scene("CHK-2", 5).await;
    let (client, base) = (&app.client, app.address.as_str());
    fill_cart(client, base, &token, &product, 3).await;
    let response = place(client, base, &token, "declined", cards::DECLINED).await;
    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["status"], "failed", "{order}");
    assert!(
        order["reason"].as_str().unwrap().contains("declined"),
        "{order}"
    );
    assert_eq!(stock(client, base, &admin, "CHK-2").await, (5, 0));
    let id = order["id"].as_str().unwrap();
    // Admins read anyone's order; a failed order cannot ship.
    let seen: Value = get_json(client, app.url(&format!("/api/v1/orders/{id}")), &admin).await;
    assert_eq!(seen["status"], "failed");
    let response = client
        .post(app.url(&format!("/api/v1/orders/{id}/ship")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_problem(response, 409, "invalid_order_transition").await;
    assert_eq!(
        timeline(client, base, &token, id).await,
        [
            "placed",
            "stock_reserved",
            "payment_voided",
            "stock_released",
            "failed"
        ]
    );
    let payment: Value = get_json(
        client,
        app.url(&format!("/api/v1/payments/orders/{id}")),
        &token,
    )
    .await;
    assert_eq!(payment["status"], "declined");
    assert_eq!(payment["decline_code"], "card_declined");
    assert_eq!(captures(&app).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_confirmed_order_refunds_it_and_restocks() {
    let Scene {
        app,
        admin,
        token,
        product,
        ..
    } = scene("CHK-3", 4).await;
    let (client, base) = (&app.client, app.address.as_str());
    fill_cart(client, base, &token, &product, 4).await;
    let order: Value = place(client, base, &token, "k", cards::SUCCEEDS)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(order["status"], "confirmed");
    assert_eq!(stock(client, base, &admin, "CHK-3").await, (0, 0));
    let id = order["id"].as_str().unwrap();
    let cancelled: Value = post_json(
        client,
        app.url(&format!("/api/v1/orders/{id}/cancel")),
        &token,
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["reason"], "cancelled by the customer");
    assert_eq!(stock(client, base, &admin, "CHK-3").await, (4, 0));
    let payment: Value = get_json(
        client,
        app.url(&format!("/api/v1/payments/orders/{id}")),
        &token,
    )
    .await;
    assert_eq!(payment["status"], "refunded");
    let kinds = timeline(client, base, &token, id).await;
    assert_eq!(
        kinds[6..],
        [
            "cancellation_requested",
            "payment_refunded",
            "stock_restocked",
            "cancelled"
        ]
    );
    // Cancelled is final.
    let response = client
        .post(app.url(&format!("/api/v1/orders/{id}/cancel")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_problem(response, 409, "invalid_order_transition").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_refuse_other_bodies_and_are_required() {
    let Scene {
        app,
        admin,
        token,
        product,
        ..
    } = scene("CHK-4", 5).await;
    let (client, base) = (&app.client, app.address.as_str());
    fill_cart(client, base, &token, &product, 1).await;
    let first = place(client, base, &token, "same-key", cards::SUCCEEDS).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();

    // The cart is empty now, yet the same key answers the same order.
    let again = place(client, base, &token, "same-key", cards::SUCCEEDS).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);

    let other_body = place(client, base, &token, "same-key", cards::DECLINED).await;
    assert_problem(other_body, 422, "idempotency_key_reused").await;

    let response = client
        .post(app.url("/api/v1/orders"))
        .bearer_auth(&token)
        .json(&json!({"payment_method": {"card_number": cards::SUCCEEDS}}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "idempotency_key_required").await;

    // An empty cart is an answer too (422), kept for its key.
    let empty = place(client, base, &token, "empty-cart", cards::SUCCEEDS).await;
    let body = assert_problem(empty, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "cart");

    // Bad input: 4xx problems, never a 500.
    let response = client
        .put(app.url("/api/v1/cart"))
        .bearer_auth(&token)
        .json(&json!({"items": [{"product_id": product, "quantity": 101}]}))
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "items[0].quantity");
    let response = client
        .put(app.url("/api/v1/cart"))
        .bearer_auth(&token)
        .json(&json!({"items": [{"product_id": Uuid::now_v7(), "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "validation_failed").await;
    fill_cart(client, base, &token, &product, 1).await;
    let response = place(client, base, &token, "bad-card", "12ab").await;
    let body = assert_problem(response, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "payment_method.card_number");

    // Keys expire after 24 hours: then the key is new again.
    diesel::sql_query(
        "UPDATE orders.idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'same-key'",
    )
    .execute(&mut app.db().await)
    .await
    .unwrap();
    let reused = place(client, base, &token, "same-key", cards::SUCCEEDS).await;
    assert_eq!(reused.status(), 201);
    let reused: Value = reused.json().await.unwrap();
    assert_ne!(reused["id"], first["id"]);
    assert_eq!(stock(client, base, &admin, "CHK-4").await, (3, 0));
    // Newest first, a page at a time.
    let page: Value = get_json(client, app.url("/api/v1/orders?limit=1"), &token).await;
    assert_eq!(page["items"][0]["id"], reused["id"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let next: Value = get_json(
        client,
        app.url(&format!("/api/v1/orders?limit=1&cursor={cursor}")),
        &token,
    )
    .await;
    assert_eq!(next["items"][0]["id"], first["id"]);
    // Two orders, two charges: one per key.
    assert_eq!(captures(&app).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projection_is_rebuilt_from_the_events() {
    let Scene {
        app,
        admin,
        token,
        product,
        ..
    } = scene("CHK-5", 3).await;
    let (client, base) = (&app.client, app.address.as_str());
    let mut orders = Vec::new();
    for (key, card) in [
        ("a", cards::SUCCEEDS),
        ("b", cards::DECLINED),
        ("c", cards::SUCCEEDS),
    ] {
        fill_cart(client, base, &token, &product, 1).await;
        let order: Value = place(client, base, &token, key, card)
            .await
            .json()
            .await
            .unwrap();
        orders.push(order["id"].as_str().unwrap().to_owned());
    }
    client
        .post(app.url(&format!("/api/v1/orders/{}/cancel", orders[2])))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let read = |id: String| {
        let (token, url) = (token.clone(), app.url(&format!("/api/v1/orders/{id}")));
        async move { get_json::<Value>(client, url, &token).await }
    };
    let mut before = Vec::new();
    for id in &orders {
        before.push(read(id.clone()).await);
    }
    assert_eq!(
        before
            .iter()
            .map(|o| o["status"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["confirmed", "failed", "cancelled"]
    );
    // Lose the projection entirely, then rebuild it from the events.
    diesel::sql_query("DELETE FROM orders.orders")
        .execute(&mut app.db().await)
        .await
        .unwrap();
    assert_eq!(read(orders[0].clone()).await["code"], "order_not_found");
    let rebuilt: Value = post_json(
        client,
        app.url("/api/v1/orders/projections/rebuild"),
        &admin,
    )
    .await;
    assert_eq!(rebuilt["rebuilt"], 3);
    for (id, was) in orders.iter().zip(&before) {
        assert_eq!(&read(id.clone()).await, was);
    }
    // The events cannot be rewritten.
    let tamper = diesel::sql_query("UPDATE orders.order_events SET kind = 'confirmed'")
        .execute(&mut app.db().await)
        .await;
    assert!(tamper.unwrap_err().to_string().contains("append-only"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_customers_race_for_ten_units_and_exactly_ten_win() {
    let Scene {
        app,
        admin,
        product,
        ..
    } = scene_with(
        "LAST-10",
        10,
        &[
            ("APP__ORDER__DATABASE__MAX_CONNECTIONS", "20"),
            ("APP__SERVER__WORKERS", "2"),
        ],
    )
    .await;
    let (client, base) = (&app.client, app.address.clone());
    let mut customers = Vec::new();
    for _ in 0..200 {
        let token = customer_token(&app.settings, Uuid::now_v7());
        fill_cart(client, &base, &token, &product, 1).await;
        customers.push(token);
    }
    // All at once; then one watcher waits for the sagas (200 pollers would
    // load the machine they wait on). The wait fails only if settling stalls,
    // never because a busy machine settles the race slowly.
    let mut tasks = tokio::task::JoinSet::new();
    for (i, token) in customers.iter().cloned().enumerate() {
        let (client, base) = (client.clone(), base.clone());
        tasks.spawn(async move {
            let response = place(
                &client,
                &base,
                &token,
                &format!("race-{i}"),
                cards::SUCCEEDS,
            )
            .await;
            assert!(
                matches!(
                    response.status(),
                    StatusCode::CREATED | StatusCode::ACCEPTED
                ),
                "{}",
                response.status()
            );
            let order: Value = response.json().await.unwrap();
            (token, order["id"].as_str().unwrap().to_owned())
        });
    }
    let mut placed = Vec::new();
    while let Some(order) = tasks.join_next().await {
        placed.push(order.unwrap());
    }
    until_done(
        "the race's orders settle",
        Duration::from_secs(60),
        || async {
            let open = count(
                &app,
                "SELECT count(*) AS n FROM orders.orders \
                 WHERE status NOT IN ('confirmed', 'failed', 'cancelled')",
            )
            .await;
            if open == 0 { Ok(()) } else { Err(open as u64) }
        },
    )
    .await;
    let mut confirmed = 0;
    let mut failed = 0;
    for (token, id) in &placed {
        let order: Value = get_json(client, format!("{base}/api/v1/orders/{id}"), token).await;
        match order["status"].as_str().unwrap() {
            "confirmed" => confirmed += 1,
            "failed" => {
                assert!(
                    order["reason"]
                        .as_str()
                        .unwrap()
                        .contains("insufficient stock for LAST-10"),
                    "{order}"
                );
                failed += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((confirmed, failed), (10, 190));
    assert_eq!(stock(client, &base, &admin, "LAST-10").await, (0, 0));
    // Ten captures, all for confirmed orders; no failed order was charged.
    assert_eq!(captures(&app).await, 10);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) AS n FROM payment.payments p JOIN orders.orders o ON o.id = p.order_id \
             WHERE o.status = 'failed' AND p.status = 'captured'"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_fifty_times_at_once_makes_one_order_and_one_charge() {
    let Scene {
        app,
        admin,
        token,
        product,
        ..
    } = scene("SAME-KEY", 5).await;
    let (client, base) = (&app.client, app.address.clone());
    fill_cart(client, &base, &token, &product, 2).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        tasks.spawn(async move {
            let response = place(&client, &base, &token, "once", cards::SUCCEEDS).await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body)
        });
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(result) = tasks.join_next().await {
        let (status, body) = result.unwrap();
        match status {
            201 | 202 => {
                ids.insert(body["id"].as_str().unwrap().to_owned());
            }
            409 => assert_eq!(body["code"], "idempotency_key_in_use"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ids.len(), 1, "every answer names the one order");
    assert_eq!(
        count(&app, "SELECT count(*) AS n FROM orders.orders").await,
        1
    );
    let id = ids.into_iter().next().unwrap();
    settled(client, &base, &token, &id).await;
    assert_eq!(captures(&app).await, 1);
    assert_eq!(stock(client, &base, &admin, "SAME-KEY").await, (3, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_never_answers_fails_the_order_instead_of_leaving_it_stuck() {
    let Scene {
        app,
        admin,
        token,
        product,
        ..
    } = scene_with(
        "SLOW-PAY",
        2,
        &[
            (
                "APP__RESILIENCE__PAYMENT_PROVIDER__ATTEMPT_TIMEOUT_MS",
                "300",
            ),
            ("APP__RESILIENCE__PAYMENT_PROVIDER__DEADLINE_MS", "300"),
            ("APP__ORDER__MAX_STEP_ATTEMPTS", "2"),
            ("APP__ORDER__RETRY_BASE_MS", "50"),
            ("APP__ORDER__RETRY_MAX_MS", "100"),
            ("APP__ORDER__RECOVERY_INTERVAL_MS", "100"),
            ("APP__ORDER__CHECKOUT_WAIT_MS", "500"),
        ],
    )
    .await;
    let (client, base) = (&app.client, app.address.as_str());
    fill_cart(client, base, &token, &product, 2).await;
    let response = place(client, base, &token, "slow", cards::TIMES_OUT).await;
    assert_eq!(response.status(), 202, "the checkout outlasts the wait");
    assert!(response.headers().contains_key("location"));
    let order: Value = response.json().await.unwrap();
    let order = settled(client, base, &token, order["id"].as_str().unwrap()).await;
    assert_eq!(order["status"], "failed", "{order}");
    // The customer's (and the email's) reason names the step and what did
    // not answer, never an address or an error's own words.
    assert_eq!(
        order["reason"],
        "the authorize step could not be completed: the payment provider did not answer in time",
        "{order}"
    );
    assert_eq!(stock(client, base, &admin, "SLOW-PAY").await, (2, 0));
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_customer_is_told_of_confirmed_failed_and_cancelled_orders() {
    let app = spawn_app_with(&[]).await;
    let admin = app.token(&[Role::Admin]);
    let (client, base) = (&app.client, app.address.as_str());
    let product = stocked_product(client, base, &admin, "MAIL-1", 1000, 5).await;
    let ada = app.customer("ada@example.com").await;
    let token = ada["access_token"].as_str().unwrap();
    fill_cart(client, base, token, &product, 1).await;
    let confirmed: Value = place(client, base, token, "1", cards::SUCCEEDS)
        .await
        .json()
        .await
        .unwrap();
    fill_cart(client, base, token, &product, 1).await;
    place(client, base, token, "2", cards::INSUFFICIENT_FUNDS).await;
    client
        .post(app.url(&format!(
            "/api/v1/orders/{}/cancel",
            confirmed["id"].as_str().unwrap()
        )))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let subjects = eventually("three order emails", || async {
        let own: Value = client
            .get(app.url("/api/v1/notifications?limit=20"))
            .bearer_auth(token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let subjects: Vec<String> = own["items"]
            .as_array()?
            .iter()
            .filter_map(|n| n["subject"].as_str())
            .filter(|s| s.starts_with("Order"))
            .map(str::to_owned)
            .collect();
        (subjects.len() == 3).then_some(subjects)
    })
    .await;
    for prefix in ["Order confirmed", "Order not completed", "Order cancelled"] {
        assert!(
            subjects.iter().any(|s| s.starts_with(prefix)),
            "{prefix}: {subjects:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_steps_are_for_the_shops_modules_not_its_customers() {
    let app = spawn_app_with(&[]).await;
    let customer = app.token(&[Role::Customer]);
    let service = app::compose::service_tokens(&app.settings)
        .unwrap()
        .token()
        .unwrap();
    let order = Uuid::now_v7();
    let calls = [
        (
            "/api/v1/payments/methods",
            json!({"card_number": cards::SUCCEEDS}),
        ),
        (
            "/api/v1/payments/authorizations",
            json!({"order_id": order, "customer_id": Uuid::now_v7(),
                   "amount": {"amount_minor": 100, "currency": "EUR"},
                   "payment_method": {"token": "pm_x", "card_last4": "4242"}}),
        ),
        (
            "/api/v1/inventory/reservations",
            json!({"order_id": order, "lines": [{"sku": "NOPE-1", "quantity": 1}]}),
        ),
    ];
    for (path, body) in &calls {
        let response = app
            .client
            .post(app.url(path))
            .bearer_auth(&customer)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_problem(response, 403, "forbidden").await;
    }
    for step in ["capture", "void", "refund"] {
        let response = app
            .client
            .post(app.url(&format!("/api/v1/payments/orders/{order}/{step}")))
            .bearer_auth(&customer)
            .send()
            .await
            .unwrap();
        assert_problem(response, 403, "forbidden").await;
    }
    // The service identity may; a user token cannot claim it.
    let response = app
        .client
        .post(app.url("/api/v1/payments/methods"))
        .bearer_auth(&service)
        .json(&json!({"card_number": cards::SUCCEEDS}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let method: Value = response.json().await.unwrap();
    assert_eq!(method["card_last4"], "4242");
    let forged = app.token(&[Role::Service]);
    let response = app
        .client
        .post(app.url("/api/v1/payments/methods"))
        .bearer_auth(&forged)
        .json(&json!({"card_number": cards::SUCCEEDS}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "invalid_token").await;
    // Nor can an admin hand the role to a user.
    let admin = app.admin("boss@example.com").await;
    let ada = app.customer("ada@example.com").await;
    let me: Value = get_json(
        &app.client,
        app.url("/api/v1/users/me"),
        ada["access_token"].as_str().unwrap(),
    )
    .await;
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/users/{}", me["id"].as_str().unwrap())))
        .bearer_auth(admin["access_token"].as_str().unwrap())
        .json(&json!({"roles": ["service"]}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "validation_failed").await;
}

/// Nothing is kept for ever: idempotency keys older than their retention
/// (a day) are pruned by the recovery worker, younger ones stay; refresh
/// tokens expired for more than a day are pruned by the user module.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_idempotency_keys_and_refresh_tokens_are_pruned() {
    let app = spawn_app_with(&[
        ("APP__ORDER__PRUNE_INTERVAL_SECS", "1"),
        ("APP__USER__PRUNE_INTERVAL_SECS", "1"),
    ])
    .await;
    let customer = Uuid::now_v7();
    for (key, age) in [("old", "25 hours"), ("young", "1 hour")] {
        diesel::sql_query(format!(
            "INSERT INTO orders.idempotency_keys (customer_id, key, fingerprint, created_at) \
             VALUES ($1, '{key}', 'f', now() - interval '{age}')"
        ))
        .bind::<diesel::sql_types::Uuid, _>(customer)
        .execute(&mut app.db().await)
        .await
        .unwrap();
    }
    // Two sign-ins, two refresh tokens; one of them long expired.
    app.customer("retention@example.com").await;
    app.login("retention@example.com", crate::helpers::PASSWORD)
        .await;
    diesel::sql_query(
        "UPDATE users.refresh_tokens SET expires_at = now() - interval '2 days' \
         WHERE id = (SELECT id FROM users.refresh_tokens ORDER BY issued_at, id LIMIT 1)",
    )
    .execute(&mut app.db().await)
    .await
    .unwrap();
    let count = |sql: &'static str| {
        let app = &app;
        async move {
            diesel::sql_query(sql)
                .get_result::<Count>(&mut app.db().await)
                .await
                .unwrap()
                .n
        }
    };
    eventually("the expired rows to be pruned", || async {
        let keys = count("SELECT count(*) AS n FROM orders.idempotency_keys WHERE key = 'old'").await;
        let tokens = count(
            "SELECT count(*) AS n FROM users.refresh_tokens WHERE expires_at < now() - interval '1 day'",
        )
        .await;
        (keys == 0 && tokens == 0).then_some(())
    })
    .await;
    assert_eq!(
        count("SELECT count(*) AS n FROM orders.idempotency_keys WHERE key = 'young'").await,
        1
    );
    assert_eq!(
        count("SELECT count(*) AS n FROM users.refresh_tokens").await,
        1
    );
}
