//! The checkout saga in one process: an order confirmed, one failed with the
//! stock given back, one whose provider never answers, and the last units
//! raced for by two hundred customers. Idempotency keys: `checkout_idempotency`;
//! cancelling, the projection, the emails and the saga's steps: `orders`.

use std::time::Duration;

use kernel::Role;
use payment_sandbox::cards;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::checkout::scene::{Scene, captures, scene, scene_with};
use crate::checkout::shop::*;
use crate::helpers::{assert_problem, count, get_as, until_done};

pub mod scene;
pub mod shop;

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
    // The answer is the order as the saga's last step stored it.
    let stored: Value = get_json(client, app.url(&location), &token).await;
    assert_eq!(stored, order);

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
        let response = get_as(client, app.url(&path), &stranger).await;
        assert_problem(response, 404, "order_not_found").await;
    }
    let payment_url = app.url(&format!(
        "/api/v1/payments/{}",
        order["payment_id"].as_str().unwrap()
    ));
    let response = get_as(client, payment_url, &stranger).await;
    assert_problem(response, 404, "payment_not_found").await;
    let mine: Value = get_json(client, app.url("/api/v1/orders?limit=10"), &token).await;
    assert_eq!(mine["items"][0]["id"], id);
    assert_eq!(mine["next_cursor"], Value::Null);
    let response = get_as(
        client,
        app.url("/api/v1/orders?cursor=not-a-cursor"),
        &token,
    )
    .await;
    assert_problem(response, 400, "invalid_cursor").await;

    // Shipping is for admins, then the order can no longer be cancelled.
    let response = order_action(client, base, &token, id, "ship").await;
    assert_eq!(response.status(), 403);
    let shipped = order_action(client, base, &admin, id, "ship").await;
    let shipped: Value = shipped.json().await.unwrap();
    assert_eq!(shipped["status"], "shipped");
    let response = order_action(client, base, &token, id, "cancel").await;
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

/// A stock row's events: each of a reservation's moves writes its own
/// `StockChanged` in the statement that moves the row (its payload built by
/// SQL), and it must be exactly what serde makes of the event, with the
/// figures the row took, in the order the row took them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stock_move_announces_the_figures_the_row_took() {
    use inventory_api::events::StockChanged;

    #[derive(diesel::QueryableByName)]
    struct Written {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: Uuid,
        #[diesel(sql_type = diesel::sql_types::Text)]
        event_type: String,
        #[diesel(sql_type = diesel::sql_types::Jsonb)]
        envelope: Value,
    }
    let Scene {
        app,
        token,
        product,
        ..
    } = scene("CHK-EVENTS", 5).await;
    let (client, base) = (&app.client, app.address.as_str());
    fill_cart(client, base, &token, &product, 3).await;
    let order: Value = place(client, base, &token, "events", cards::SUCCEEDS)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(order["status"], "confirmed", "{order}");

    let written: Vec<Written> = diesel_async::RunQueryDsl::load(
        diesel::sql_query(
            "SELECT id, event_type, envelope FROM inventory.outbox \
             WHERE aggregate_id = 'CHK-EVENTS' AND event_type = 'inventory.stock_changed.v1' \
             ORDER BY seq",
        ),
        &mut app.db().await,
    )
    .await
    .unwrap();
    let mut figures = Vec::new();
    for row in written {
        let envelope: kernel::Envelope = serde_json::from_value(row.envelope.clone()).unwrap();
        assert_eq!(envelope.id, row.id);
        assert_eq!(envelope.event_type, row.event_type);
        assert_eq!(
            (envelope.source.as_str(), envelope.aggregate_id.as_str()),
            ("inventory", "CHK-EVENTS")
        );
        let change: StockChanged = envelope.payload().unwrap();
        assert_eq!(
            envelope.payload,
            serde_json::to_value(&change).unwrap(),
            "the payload is serde's StockChanged, field for field"
        );
        assert_eq!(change.sku.as_str(), "CHK-EVENTS");
        assert_eq!(change.available, change.on_hand - change.reserved);
        assert!(change.low_stock_threshold.is_some());
        figures.push((change.on_hand, change.reserved, change.version));
    }
    // Stocked, reserved, sold: each movement one version up, so a consumer
    // can tell the newer of two events whatever order they arrive in.
    assert_eq!(figures, [(5, 0, Some(1)), (5, 3, Some(2)), (2, 0, Some(3))]);
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
    let response = order_action(client, base, &admin, id, "ship").await;
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
            let status = response.status();
            let order: Value = response.json().await.unwrap();
            assert!(
                matches!(status, StatusCode::CREATED | StatusCode::ACCEPTED),
                "{status}: {order}"
            );
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
    // The losers never reached the payment: their compensation asks the
    // payment module to void (the flag is set with the order), finds no
    // payment, and records none.
    assert_eq!(
        count(
            &app,
            "SELECT count(*) AS n FROM orders.order_events e JOIN orders.orders o ON o.id = e.order_id \
             WHERE o.status = 'failed' AND e.kind = 'payment_voided'"
        )
        .await,
        0
    );
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

/// A run that lost its saga's lease while a step was under way (it stalled
/// past the lease, or gave it up at a stop, and another instance took the
/// saga over) gets the step's failure back after that: it must not turn the
/// saga back, which would fail an order the run holding the lease may
/// complete. Here the lease is taken from under the placing request's run
/// while the provider keeps it waiting; its step then gives up for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_lost_its_lease_does_not_turn_the_saga_back() {
    use diesel_async::RunQueryDsl as _;
    let Scene {
        app,
        token,
        product,
        ..
    } = scene_with(
        "STALE-RUN",
        2,
        &[
            (
                "APP__RESILIENCE__PAYMENT_PROVIDER__ATTEMPT_TIMEOUT_MS",
                "1500",
            ),
            ("APP__RESILIENCE__PAYMENT_PROVIDER__DEADLINE_MS", "1500"),
            ("APP__ORDER__MAX_STEP_ATTEMPTS", "1"),
            ("APP__ORDER__STEP_TIMEOUT_MS", "2000"),
            ("APP__ORDER__CHECKOUT_WAIT_MS", "100"),
        ],
    )
    .await;
    let (client, base) = (&app.client, app.address.as_str());
    fill_cart(client, base, &token, &product, 1).await;
    let response = place(client, base, &token, "stale", cards::TIMES_OUT).await;
    assert_eq!(response.status(), 202);
    let order: Value = response.json().await.unwrap();
    let id: Uuid = order["id"].as_str().unwrap().parse().unwrap();
    // Another instance's lease, for ten minutes.
    let mut db = app.db().await;
    let taken = diesel::sql_query(
        "UPDATE orders.sagas SET lease_owner = gen_random_uuid(), \
         lease_until = now() + interval '10 minutes' WHERE order_id = $1 AND NOT done",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .execute(&mut db)
    .await
    .unwrap();
    assert_eq!(taken, 1, "the saga was still running");
    // The step answers within its timeout (two seconds, the provider's
    // deadline before it), however slow the machine: the run's step has
    // given up by then, and what the run does with that follows at once.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let direction = count(
        &app,
        &format!(
            "SELECT count(*) AS n FROM orders.sagas \
             WHERE order_id = '{id}' AND direction = 'forward' AND outcome IS NULL"
        ),
    )
    .await;
    assert_eq!(
        direction, 1,
        "the saga was turned back by a run without its lease"
    );
}

/// A cancel while the placing request's run still drives the saga, on the
/// same instance (in a monolith there is no other): the reservation is held
/// up by a lock on the stock row, so the cancel lands with nothing recorded
/// yet. The cancel's run must not drive the saga beside the placing one (it
/// would find no reservation and no payment, close the order as cancelled,
/// and the placing run would then reserve, charge and sell regardless).
/// The placing run keeps its lease, meets the turn before its next call
/// (the cancel tells it, in the same process), and gives back what it
/// took: the order cancelled, the stock whole, nothing authorized, sold or
/// captured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_the_checkout_leaves_nothing_sold_or_charged() {
    use diesel_async::SimpleAsyncConnection as _;
    let Scene {
        app,
        admin,
        token,
        product,
        ..
    } = scene_with("CANCEL-MID", 2, &[("APP__ORDER__CHECKOUT_WAIT_MS", "300")]).await;
    let (client, base) = (&app.client, app.address.as_str());
    fill_cart(client, base, &token, &product, 2).await;
    let mut lock = app.db().await;
    lock.batch_execute(
        "BEGIN; SELECT on_hand FROM inventory.stock WHERE sku = 'CANCEL-MID' FOR UPDATE",
    )
    .await
    .unwrap();
    let response = place(client, base, &token, "mid", cards::SUCCEEDS).await;
    assert_eq!(response.status(), 202, "the reservation waits on the lock");
    let order: Value = response.json().await.unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    let cancelled = order_action(client, base, &token, &id, "cancel").await;
    assert_eq!(
        cancelled.status(),
        200,
        "{}",
        cancelled.text().await.unwrap()
    );
    lock.batch_execute("COMMIT").await.unwrap();

    let order = settled(client, base, &token, &id).await;
    assert_eq!(order["status"], "cancelled", "{order}");
    assert_eq!(stock(client, base, &admin, "CANCEL-MID").await, (2, 0));
    assert_eq!(
        count(
            &app,
            "SELECT count(*) AS n FROM payment.payments WHERE status NOT IN ('voided', 'refunded')"
        )
        .await,
        0,
        "no payment left held or charged"
    );
    let kinds = timeline(client, base, &token, &id).await;
    assert!(
        !kinds.iter().any(|k| k == "confirmed"),
        "never confirmed: {kinds:?}"
    );
    // Turned before its next call, not at its finish: nothing was sold or
    // charged to be given back.
    assert_eq!(captures(&app).await, 0);
    for undone in ["payment_authorized", "stock_committed", "payment_captured"] {
        assert!(!kinds.iter().any(|k| k == undone), "{undone}: {kinds:?}");
    }
}
