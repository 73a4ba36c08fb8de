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
    customer_token, fill_cart, place, settled, stock, stocked_product, timeline,
};
use crate::helpers::{
    Shop, free_port, fresh_key_path, fresh_mail_dir, mint_token, test_database, test_settings,
};

const POOLS: &[&str] = &[
    "APP__USER__DATABASE__MAX_CONNECTIONS",
    "APP__CATALOG__DATABASE__MAX_CONNECTIONS",
    "APP__NOTIFICATION__DATABASE__MAX_CONNECTIONS",
    "APP__INVENTORY__DATABASE__MAX_CONNECTIONS",
    "APP__PAYMENT__DATABASE__MAX_CONNECTIONS",
    "APP__ORDER__DATABASE__MAX_CONNECTIONS",
];

struct Topology {
    main: Shop,
    payment_env: Vec<(String, String)>,
    payment_port: u16,
    _inventory: Shop,
    payment: Option<Shop>,
    settings: app::Settings,
    _db: testkit::TestDatabase,
}

fn refs(vars: &[(String, String)]) -> Vec<(&str, &str)> {
    vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

async fn topology(provider: &str) -> Topology {
    let db = test_database().await;
    let (key, service_key, mail) = (fresh_key_path(), fresh_key_path(), fresh_mail_dir());
    let settings = test_settings(
        None,
        &[
            ("APP__AUTH__SIGNING_KEY_FILE", key.as_str()),
            ("APP__AUTH__SERVICE_KEY_FILE", service_key.as_str()),
        ],
    );
    mint_token(&settings, &[Role::Admin]);
    app::compose::service_tokens(&settings).unwrap();
    let (main_port, inventory_port, payment_port) = (free_port(), free_port(), free_port());
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let mut common: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), db.url().to_owned()),
        ("APP__AUTH__SERVICE_KEY_FILE".into(), service_key.clone()),
        ("APP__DATABASE__MIGRATE_ON_START".into(), "false".into()),
        ("APP__RATE_LIMIT__ENABLED".into(), "false".into()),
    ];
    for pool in POOLS {
        common.push(((*pool).into(), "3".into()));
    }
    let served_by_main = |module: &str| {
        vec![
            ("APP__MODULES__ENABLED".to_owned(), module.to_owned()),
            ("APP__MODULES__USER__MODE".to_owned(), "remote".to_owned()),
            ("APP__MODULES__USER__URL".to_owned(), url(main_port)),
        ]
    };
    let mut inventory_env = common.clone();
    inventory_env.extend(served_by_main("inventory"));
    let mut payment_env = common.clone();
    payment_env.extend(served_by_main("payment"));
    payment_env.push(("APP__PAYMENT__PROVIDER_URL".into(), provider.to_owned()));
    payment_env.push((
        "APP__RESILIENCE__PAYMENT_PROVIDER__ATTEMPT_TIMEOUT_MS".into(),
        "300".into(),
    ));
    payment_env.push((
        "APP__RESILIENCE__PAYMENT_PROVIDER__DEADLINE_MS".into(),
        "300".into(),
    ));
    let mut main_env = common;
    main_env.extend([
        ("APP__AUTH__SIGNING_KEY_FILE".into(), key.clone()),
        ("APP__NOTIFICATION__EMAIL__FILE_DIR".into(), mail),
        (
            "APP__MODULES__ENABLED".into(),
            "user,catalog,notification,inventory,payment,order".into(),
        ),
        ("APP__MODULES__INVENTORY__MODE".into(), "remote".into()),
        ("APP__MODULES__INVENTORY__URL".into(), url(inventory_port)),
        ("APP__MODULES__PAYMENT__MODE".into(), "remote".into()),
        ("APP__MODULES__PAYMENT__URL".into(), url(payment_port)),
        ("APP__ORDER__MAX_STEP_ATTEMPTS".into(), "2".into()),
        ("APP__ORDER__RETRY_BASE_MS".into(), "50".into()),
        ("APP__ORDER__RETRY_MAX_MS".into(), "200".into()),
        ("APP__ORDER__RECOVERY_INTERVAL_MS".into(), "100".into()),
        ("APP__ORDER__CHECKOUT_WAIT_MS".into(), "3000".into()),
        (
            "APP__RESILIENCE__PAYMENT__BREAKER__WAIT_OPEN_MS".into(),
            "300".into(),
        ),
        ("APP__RESILIENCE__PAYMENT__MAX_RETRIES".into(), "0".into()),
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
        settings,
        _db: db,
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
    let (server, port) = payment_sandbox::server("127.0.0.1", 0, 1).unwrap();
    let provider_handle = server.handle();
    tokio::spawn(server);
    let mut t = topology(&format!("http://127.0.0.1:{port}/")).await;
    let client = reqwest::Client::new();
    let base = t.main.url("");
    let admin = mint_token(&t.settings, &[Role::Admin]);
    // Stocked through the gateway: the inventory process answers.
    let product = stocked_product(&client, &base, &admin, "EXT-1", 700, 6).await;
    let token = customer_token(&t.settings, Uuid::now_v7());

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
    let payment: Value = client
        .get(format!("{base}/api/v1/payments/orders/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
    let placing = {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        tokio::spawn(async move { place(&client, &base, &token, "killed", cards::TIMES_OUT).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
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
