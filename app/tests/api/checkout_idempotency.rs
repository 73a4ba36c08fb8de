//! Checkout idempotency keys: replays, other bodies, expiry, one key fifty times at once, pruning.

use diesel_async::RunQueryDsl;
use payment_sandbox::cards;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::checkout::scene::{Scene, captures, scene};
use crate::checkout::shop::*;
use crate::helpers::{Count, assert_problem, count, eventually, spawn_app_with};

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

/// A double click whose client makes a key per click: twenty orders of one
/// cart at once, each with its own key, order it once. The others are
/// answered as if they came second (the cart is empty by then), and keep
/// that answer under their keys; nothing else is charged or sold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cart_ordered_under_twenty_keys_at_once_is_ordered_once() {
    let Scene {
        app,
        admin,
        token,
        product,
        ..
    } = scene("ONE-CART", 10).await;
    let (client, base) = (&app.client, app.address.clone());
    fill_cart(client, &base, &token, &product, 2).await;
    let mut tasks = tokio::task::JoinSet::new();
    for click in 0..20 {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        tasks.spawn(async move {
            let key = format!("click-{click}");
            let response = place(&client, &base, &token, &key, cards::SUCCEEDS).await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body)
        });
    }
    let mut ids = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let (status, body) = result.unwrap();
        match status {
            201 | 202 => ids.push(body["id"].as_str().unwrap().to_owned()),
            422 => assert!(body.to_string().contains("is empty"), "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ids.len(), 1, "one order for one cart: {ids:?}");
    assert_eq!(
        count(&app, "SELECT count(*) AS n FROM orders.orders").await,
        1
    );
    settled(client, &base, &token, &ids[0]).await;
    assert_eq!(captures(&app).await, 1);
    assert_eq!(stock(client, &base, &admin, "ONE-CART").await, (8, 0));
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

/// A conditional cart replacement that meets the cart being taken by a
/// checkout (the row locked, then deleted) is refused 412, the cart having
/// changed, not a 500 for the row gone between two statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_cart_put_meeting_a_checkout_that_takes_the_cart_is_412() {
    let Scene {
        app,
        token,
        product,
        ..
    } = scene("TAKEN-1", 5).await;
    let cart_url = app.url("/api/v1/cart");
    let body = json!({"items": [{"product_id": product, "quantity": 1}]});
    let set = app
        .client
        .put(&cart_url)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let read = app
        .client
        .get(&cart_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let tag = read.headers()["etag"].to_str().unwrap().to_owned();
    // A checkout's take, held open: the row locked, to be deleted.
    let mut taker = app.db().await;
    for sql in ["BEGIN", "SELECT customer_id FROM orders.carts FOR UPDATE"] {
        diesel::sql_query(sql).execute(&mut taker).await.unwrap();
    }
    let Count { n: taker_pid } = diesel::sql_query("SELECT pg_backend_pid()::bigint AS n")
        .get_result(&mut taker)
        .await
        .unwrap();
    let put = tokio::spawn({
        let (client, url, token) = (app.client.clone(), cart_url.clone(), token.clone());
        let body = json!({"items": [{"product_id": product, "quantity": 2}]});
        async move {
            client
                .put(&url)
                .bearer_auth(&token)
                .header("if-match", tag)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    });
    let blocked = format!(
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE {taker_pid} = ANY(pg_blocking_pids(pid))"
    );
    eventually("the conditional PUT waiting for the taken cart", || async {
        (count(&app, &blocked).await > 0).then_some(())
    })
    .await;
    for sql in ["DELETE FROM orders.carts", "COMMIT"] {
        diesel::sql_query(sql).execute(&mut taker).await.unwrap();
    }
    let refused = put.await.unwrap();
    assert_problem(refused, 412, "precondition_failed").await;
}

/// A cart edited in two tabs from the same read: with `If-Match` (the
/// `ETag` of the GET), the second tab's replacement is refused 412 rather
/// than dropping the first tab's line. The first conditional PUT of a cart
/// never set names the empty cart's tag; two such PUTs cannot both pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_replaced_with_if_match_is_refused_when_it_changed_since() {
    let crate::checkout::scene::Scene {
        app,
        admin,
        token,
        product,
        ..
    } = crate::checkout::scene::scene("TABS-1", 5).await;
    let (client, base) = (&app.client, app.address.as_str());
    let other =
        crate::checkout::shop::stocked_product(client, base, &admin, "TABS-2", 500, 5).await;
    let cart_url = format!("{base}/api/v1/cart");
    let read = |token: String| {
        let url = cart_url.clone();
        async move {
            let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.headers()["etag"].to_str().unwrap().to_owned()
        }
    };
    let put = |product: &str, quantity: i32, if_match: &str| {
        client
            .put(&cart_url)
            .bearer_auth(&token)
            .header("if-match", if_match)
            .json(&json!({"items": [{"product_id": product, "quantity": quantity}]}))
            .send()
    };

    let empty = read(token.clone()).await;
    let (a, b) = tokio::join!(put(&product, 1, &empty), put(&other, 1, &empty));
    let statuses = [a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    assert!(
        statuses == [200, 412] || statuses == [412, 200],
        "one of two PUTs from the empty cart: {statuses:?}"
    );

    // Both tabs read this version; the first replaces it (a quantity of
    // 3 is no cart either PUT above made), the second is refused.
    let seen = read(token.clone()).await;
    assert_eq!(
        put(&product, 3, &seen).await.unwrap().status(),
        200,
        "the version read"
    );
    let stale = put(&other, 2, &seen).await.unwrap();
    crate::helpers::assert_problem(stale, 412, "precondition_failed").await;
    // The first tab's PUT sent again (its answer lost, a gateway retrying
    // it): the cart is already as it asks, so it is answered as done.
    assert_eq!(
        put(&product, 3, &seen).await.unwrap().status(),
        200,
        "a retry"
    );
    let cart: Value = client
        .get(&cart_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        cart["items"],
        json!([{"product_id": product, "quantity": 3}]),
        "{cart}"
    );
}
