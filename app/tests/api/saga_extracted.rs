//! The checkout saga with the inventory and the payment module extracted:
//! three `shop` processes on one database (each module in its own schema),
//! the order module calling the other two through their HTTP clients with
//! the service identity. Confirmed, declined, a provider that never
//! answers, and a payment process killed mid-checkout all end settled.

use kernel::Role;
use payment_sandbox::cards;
use serde_json::Value;
use uuid::Uuid;

use crate::checkout::shop::{
    customer_token, fill_cart, get_json, place, settled, stock, stocked_product, timeline,
};
use crate::helpers::{Shop, free_port, mint_token};
use crate::saga_crash::{Deployment, refs, sandbox};

struct Topology {
    main: Shop,
    payment_env: Vec<(String, String)>,
    payment_port: u16,
    _inventory: Shop,
    payment: Option<Shop>,
    deployment: Deployment,
}

async fn topology(provider: &str) -> Topology {
    let deployment = Deployment::new().await;
    let (main_port, inventory_port, payment_port) = (free_port(), free_port(), free_port());
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let main_url = url(main_port);
    let served_alone = |module: &'static str| {
        [
            ("APP__MODULES__ENABLED", module),
            ("APP__MODULES__USER__MODE", "remote"),
            ("APP__MODULES__USER__URL", main_url.as_str()),
        ]
    };
    let inventory_env = deployment.split_env(&served_alone("inventory"));
    let payment_env = deployment.split_env(
        &[
            &served_alone("payment")[..],
            &[
                ("APP__PAYMENT__PROVIDER_URL", provider),
                (
                    "APP__RESILIENCE__PAYMENT_PROVIDER__ATTEMPT_TIMEOUT_MS",
                    "300",
                ),
                ("APP__RESILIENCE__PAYMENT_PROVIDER__DEADLINE_MS", "300"),
            ],
        ]
        .concat(),
    );
    let (inventory_url, payment_url) = (url(inventory_port), url(payment_port));
    let main_env = deployment.split_env(&[
        (
            "APP__MODULES__ENABLED",
            "user,catalog,notification,inventory,payment,order",
        ),
        ("APP__MODULES__INVENTORY__MODE", "remote"),
        ("APP__MODULES__INVENTORY__URL", inventory_url.as_str()),
        ("APP__MODULES__PAYMENT__MODE", "remote"),
        ("APP__MODULES__PAYMENT__URL", payment_url.as_str()),
        ("APP__ORDER__MAX_STEP_ATTEMPTS", "2"),
        ("APP__ORDER__RETRY_BASE_MS", "50"),
        ("APP__ORDER__RETRY_MAX_MS", "200"),
        ("APP__ORDER__RECOVERY_INTERVAL_MS", "100"),
        ("APP__ORDER__CHECKOUT_WAIT_MS", "3000"),
        ("APP__RESILIENCE__PAYMENT__BREAKER__WAIT_OPEN_MS", "300"),
        ("APP__RESILIENCE__PAYMENT__MAX_RETRIES", "0"),
    ]);
    let main = Shop::start_on(main_port, &refs(&main_env));
    let inventory = Shop::start_on(inventory_port, &refs(&inventory_env));
    let payment = Shop::start_on(payment_port, &refs(&payment_env));
    main.wait_live().await;
    inventory.wait_live().await;
    payment.wait_live().await;
    Topology {
        main,
        payment_env,
        payment_port,
        _inventory: inventory,
        payment: Some(payment),
        deployment,
    }
}

/// Places the cart again with `key` until the payment module answers.
async fn settled_after_retry(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    key: &str,
) -> Value {
    let order: Value = crate::helpers::eventually("the checkout is accepted", || async {
        let response = place(client, base, token, key, cards::SUCCEEDS).await;
        (response.status().as_u16() < 500)
            .then_some(response)?
            .json::<Value>()
            .await
            .ok()
    })
    .await;
    settled(client, base, token, order["id"].as_str().unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_runs_with_inventory_and_payment_in_their_own_processes() {
    let (provider_handle, provider) = sandbox();
    let mut t = topology(&provider).await;
    let client = crate::helpers::http();
    let base = t.main.url("");
    let admin = mint_token(&t.deployment.settings, &[Role::Admin]);
    // Stocked through the gateway: the inventory process answers.
    let product = stocked_product(&client, &base, &admin, "EXT-1", 700, 6).await;
    let token = customer_token(&t.deployment.settings, Uuid::now_v7());

    // Confirmed: stock sold in the inventory process, money taken in the
    // payment process.
    fill_cart(&client, &base, &token, &product, 2).await;
    let order: Value = place(&client, &base, &token, "ok", cards::SUCCEEDS)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(order["status"], "confirmed", "{order}\n{}", t.main.logs());
    assert_eq!(stock(&client, &base, &admin, "EXT-1").await, (4, 0));
    let id = order["id"].as_str().unwrap();
    let payment: Value = get_json(
        &client,
        format!("{base}/api/v1/payments/orders/{id}"),
        &token,
    )
    .await;
    assert_eq!(payment["status"], "captured", "{payment}");

    // Declined: compensated, stock back.
    fill_cart(&client, &base, &token, &product, 1).await;
    let order: Value = place(&client, &base, &token, "declined", cards::DECLINED)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(order["status"], "failed", "{order}");
    assert_eq!(stock(&client, &base, &admin, "EXT-1").await, (4, 0));

    // The provider never answers: the order fails, the hold is abandoned.
    fill_cart(&client, &base, &token, &product, 1).await;
    let response = place(&client, &base, &token, "slow", cards::TIMES_OUT).await;
    let order: Value = response.json().await.unwrap();
    let id = order["id"].as_str().unwrap_or_else(|| panic!("{order}"));
    let order = settled(&client, &base, &token, id).await;
    assert_eq!(order["status"], "failed", "{order}");
    assert_eq!(stock(&client, &base, &admin, "EXT-1").await, (4, 0));

    // The payment process is down at checkout: 503, nothing is created,
    // and the key is free to be retried once it is back.
    drop(t.payment.take());
    fill_cart(&client, &base, &token, &product, 1).await;
    let response = place(&client, &base, &token, "retry-me", cards::SUCCEEDS).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    t.payment = Some(Shop::start_on(t.payment_port, &refs(&t.payment_env)));
    t.payment.as_ref().unwrap().wait_live().await;
    let order = settled_after_retry(&client, &base, &token, "retry-me").await;
    assert_eq!(order["status"], "confirmed", "{order}");
    assert_eq!(stock(&client, &base, &admin, "EXT-1").await, (3, 0));

    // The payment process is killed while it authorizes (the provider is
    // slow to answer): the order turns back and, once the payment process
    // is back, finishes compensating: failed, the stock given back.
    drop(t.payment.take());
    let mut slow_env = t.payment_env.clone();
    for (name, value) in &mut slow_env {
        if name.starts_with("APP__RESILIENCE__PAYMENT_PROVIDER__") {
            *value = "20000".into();
        }
    }
    let slow = Shop::start_on(t.payment_port, &refs(&slow_env));
    slow.wait_live().await;
    fill_cart(&client, &base, &token, &product, 2).await;
    let payments = "SELECT count(*) AS n FROM payment.payments";
    let db = t.deployment.db.url().to_owned();
    let before = crate::crash::count(&db, payments).await;
    let placing = {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        tokio::spawn(async move { place(&client, &base, &token, "killed", cards::TIMES_OUT).await })
    };
    // The payment is opened before the provider is called: once it is
    // there, the authorization is under way in the payment process.
    crate::helpers::eventually("the authorization under way", || async {
        (crate::crash::count(&db, payments).await > before).then_some(())
    })
    .await;
    drop(slow); // SIGKILL, mid-authorization
    let response = placing.await.unwrap();
    assert_eq!(response.status(), 202, "the checkout outlasts the wait");
    let order: Value = response.json().await.unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    t.payment = Some(Shop::start_on(t.payment_port, &refs(&t.payment_env)));
    t.payment.as_ref().unwrap().wait_live().await;
    let order = settled(&client, &base, &token, &id).await;
    assert_eq!(order["status"], "failed", "{order}\n{}", t.main.logs());
    assert_eq!(stock(&client, &base, &admin, "EXT-1").await, (3, 0));
    let kinds = timeline(&client, &base, &token, &id).await;
    assert_eq!(
        kinds,
        [
            "placed",
            "stock_reserved",
            "payment_voided",
            "stock_released",
            "failed"
        ]
    );
    provider_handle.stop(false).await;
}
