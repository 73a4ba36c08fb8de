//! Orders after checkout: cancel and refund, cancel and ship refused, projection rebuild, order emails, guarded saga steps.

use diesel_async::{RunQueryDsl, SimpleAsyncConnection as _};
use kernel::Role;
use payment_sandbox::cards;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::checkout::scene::{Scene, scene, scene_with};
use crate::checkout::shop::*;
use crate::helpers::{assert_problem, count, eventually, post_as, spawn_app_with, try_get_json};

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
    let cancelled = order_action(client, base, &token, id, "cancel").await;
    let cancelled: Value = cancelled.json().await.unwrap();
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
    let response = order_action(client, base, &token, id, "cancel").await;
    assert_problem(response, 409, "invalid_order_transition").await;
}

/// `POST /orders/{id}/{action}` refused as an invalid transition: the
/// problem's `detail`.
async fn refused(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    id: &str,
    action: &str,
) -> String {
    let response = order_action(client, base, token, id, action).await;
    let problem = assert_problem(response, 409, "invalid_order_transition").await;
    problem["detail"].as_str().unwrap().to_owned()
}

/// Polls the order until its status is `status`.
async fn reaches(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    id: &str,
    status: &str,
) -> Value {
    eventually(&format!("order {id} {status}"), || async {
        let order: Value =
            try_get_json(client, format!("{base}/api/v1/orders/{id}"), token).await?;
        (order["status"] == status).then_some(order)
    })
    .await
}

/// A checkout step failed for good and the saga is giving everything back:
/// the order will end `failed` whatever a cancel says, so a cancel is
/// refused (it was answered 200, and the order ended `failed` all the
/// same). The provider never answers the authorization; the stock row is
/// locked once the reservation is made, so the release waits on it and the
/// saga is caught running back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_order_that_is_failing_is_refused_and_it_ends_failed() {
    let Scene {
        app,
        admin,
        token,
        product,
        ..
    } = scene_with(
        "FAILING-1",
        2,
        &[
            // Long enough for the test to lock the stock row before the
            // authorization gives up, however busy the machine.
            (
                "APP__RESILIENCE__PAYMENT_PROVIDER__ATTEMPT_TIMEOUT_MS",
                "3000",
            ),
            ("APP__RESILIENCE__PAYMENT_PROVIDER__DEADLINE_MS", "3000"),
            ("APP__ORDER__MAX_STEP_ATTEMPTS", "1"),
            ("APP__ORDER__STEP_TIMEOUT_MS", "4000"),
            ("APP__ORDER__RETRY_BASE_MS", "50"),
            ("APP__ORDER__RETRY_MAX_MS", "200"),
            ("APP__ORDER__RECOVERY_INTERVAL_MS", "100"),
            ("APP__ORDER__CHECKOUT_WAIT_MS", "100"),
        ],
    )
    .await;
    let (client, base) = (&app.client, app.address.as_str());
    fill_cart(client, base, &token, &product, 1).await;
    let response = place(client, base, &token, "failing", cards::TIMES_OUT).await;
    assert_eq!(
        response.status(),
        202,
        "the authorization outlasts the wait"
    );
    let order: Value = response.json().await.unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    // Reserved, while the authorization waits for the provider (3 s).
    eventually("the stock reserved", || async {
        (stock(client, base, &admin, "FAILING-1").await == (2, 1)).then_some(())
    })
    .await;
    let mut lock = app.db().await;
    lock.batch_execute(
        "BEGIN; SELECT on_hand FROM inventory.stock WHERE sku = 'FAILING-1' FOR UPDATE",
    )
    .await
    .unwrap();
    let failing = format!(
        "SELECT count(*) AS n FROM orders.sagas WHERE order_id = '{id}' \
         AND direction = 'compensate' AND outcome = 'failed' AND NOT done"
    );
    eventually("the saga turned back, the release waiting", || async {
        (count(&app, &failing).await == 1).then_some(())
    })
    .await;

    assert_eq!(
        refused(client, base, &token, &id, "cancel").await,
        "the order is failing: cancel is not possible"
    );
    lock.batch_execute("COMMIT").await.unwrap();

    let order = settled(client, base, &token, &id).await;
    assert_eq!(order["status"], "failed", "{order}");
    assert_eq!(
        order["reason"],
        "the authorize step could not be completed: the payment provider did not answer in time",
        "{order}"
    );
    assert_eq!(stock(client, base, &admin, "FAILING-1").await, (2, 0));
    let kinds = timeline(client, base, &token, &id).await;
    assert!(
        !kinds.iter().any(|k| k == "cancellation_requested"),
        "{kinds:?}"
    );
}

/// A ship refused says the order's status: `pending` (it read "the order is
/// cannot ship an order that is pending"), and `failed` or `cancelled` (both
/// read "being cancelled", their sagas having run back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_ship_names_the_orders_status() {
    let Scene {
        app,
        admin,
        token,
        product,
        ..
    } = scene_with("SHIP-WHEN", 3, &[("APP__ORDER__CHECKOUT_WAIT_MS", "300")]).await;
    let (client, base) = (&app.client, app.address.as_str());
    // Pending: its reservation waits on a lock of the stock row.
    fill_cart(client, base, &token, &product, 1).await;
    let mut lock = app.db().await;
    lock.batch_execute(
        "BEGIN; SELECT on_hand FROM inventory.stock WHERE sku = 'SHIP-WHEN' FOR UPDATE",
    )
    .await
    .unwrap();
    let response = place(client, base, &token, "pending", cards::SUCCEEDS).await;
    assert_eq!(response.status(), 202, "the reservation waits on the lock");
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["status"], "pending", "{order}");
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(
        refused(client, base, &admin, &id, "ship").await,
        "the order is pending: ship is not possible"
    );
    lock.batch_execute("COMMIT").await.unwrap();
    let order = settled(client, base, &token, &id).await;
    assert_eq!(order["status"], "confirmed", "{order}");

    // Cancelled.
    let response = order_action(client, base, &token, &id, "cancel").await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    reaches(client, base, &token, &id, "cancelled").await;
    assert_eq!(
        refused(client, base, &admin, &id, "ship").await,
        "the order is cancelled: ship is not possible"
    );

    // Failed.
    fill_cart(client, base, &token, &product, 1).await;
    let order: Value = place(client, base, &token, "declined", cards::DECLINED)
        .await
        .json()
        .await
        .unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    let order = settled(client, base, &token, &id).await;
    assert_eq!(order["status"], "failed", "{order}");
    assert_eq!(
        refused(client, base, &admin, &id, "ship").await,
        "the order is failed: ship is not possible"
    );
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
    order_action(client, base, &token, &orders[2], "cancel").await;
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
    let confirmed_id = confirmed["id"].as_str().unwrap();
    order_action(client, base, token, confirmed_id, "cancel").await;
    let subjects = eventually("three order emails", || async {
        let own: Value =
            try_get_json(client, app.url("/api/v1/notifications?limit=20"), token).await?;
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
        let url = app.url(&format!("/api/v1/payments/orders/{order}/{step}"));
        assert_problem(post_as(&app.client, url, &customer).await, 403, "forbidden").await;
    }
    // Nor for an admin: the order's saga owns its payment, and would not
    // learn of a step taken past it (a refunded order still shippable).
    let boss = app.token(&[Role::Admin]);
    for (path, body) in &calls[..2] {
        let response = app
            .client
            .post(app.url(path))
            .bearer_auth(&boss)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_problem(response, 403, "forbidden").await;
    }
    for step in ["capture", "void", "refund"] {
        let url = app.url(&format!("/api/v1/payments/orders/{order}/{step}"));
        assert_problem(post_as(&app.client, url, &boss).await, 403, "forbidden").await;
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
