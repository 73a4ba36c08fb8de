//! Crash safety of the checkout saga: a real `shop` process aborts at a
//! failpoint on every step boundary (before each call, after each call,
//! after each record), another one is started on the same database, and
//! the order must end confirmed or compensated, with the stock balanced and
//! at most one capture at the provider (a sandbox provider run by the test,
//! so it outlives the shop).

use std::collections::HashMap;

use kernel::Role;
use payment_sandbox::cards;
use serde_json::Value;
use uuid::Uuid;

use crate::checkout::shop::{
    customer_token, fill_cart, get_json, settled, stock, stocked_product, timeline, try_place,
};
use crate::helpers::{
    Shop, fresh_key_path, fresh_mail_dir, mint_token, send_json, test_database, test_settings,
};

/// One shop's worth of shared state for child processes: a fresh database,
/// the signing and service keys (made before any process starts, so all
/// share them), a mail directory.
pub struct Deployment {
    pub db: testkit::TestDatabase,
    pub settings: app::Settings,
    key: String,
    service_key: String,
    pub mail: String,
    /// The RabbitMQ namespace of this deployment's split processes.
    namespace: String,
}

impl Deployment {
    pub async fn new() -> Deployment {
        let db = test_database().await;
        let (key, service_key, mail) = (fresh_key_path(), fresh_key_path(), fresh_mail_dir());
        let settings = test_settings(
            None,
            &[
                ("APP__AUTH__SIGNING_KEY_FILE", key.as_str()),
                ("APP__AUTH__SERVICE_KEY_FILE", service_key.as_str()),
            ],
        );
        app::compose::signing_key(&settings).unwrap();
        app::compose::service_tokens(&settings).unwrap();
        Deployment {
            db,
            settings,
            key,
            service_key,
            mail,
            namespace: format!("test-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// [`Deployment::env`] for a process of a split topology: events cross
    /// processes through RabbitMQ, in a namespace of this deployment's own.
    /// The RabbitMQ namespace (exchange and queue prefix) of this deployment.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn split_env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let broker = [
            ("APP__EVENTS__TRANSPORT", "rabbitmq"),
            ("APP__EVENTS__RABBITMQ__NAMESPACE", self.namespace.as_str()),
            ("APP__EVENTS__RABBITMQ__QUEUE_TTL_MS", "120000"),
        ];
        self.env(&[&broker[..], extra].concat())
    }

    /// The environment of a `shop` process of this deployment, plus `extra`.
    /// Pools are small: several processes share the server's connection limit.
    pub fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = [
            ("DATABASE_URL", self.db.url()),
            ("APP__AUTH__SIGNING_KEY_FILE", self.key.as_str()),
            ("APP__AUTH__SERVICE_KEY_FILE", self.service_key.as_str()),
            ("APP__NOTIFICATION__EMAIL__FILE_DIR", self.mail.as_str()),
            ("APP__DATABASE__MIGRATE_ON_START", "false"),
            ("APP__RATE_LIMIT__ENABLED", "false"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for module in [
            "USER",
            "CATALOG",
            "NOTIFICATION",
            "INVENTORY",
            "PAYMENT",
            "ORDER",
        ] {
            vars.push((
                format!("APP__{module}__DATABASE__MAX_CONNECTIONS"),
                "3".to_owned(),
            ));
        }
        vars
    }
}

/// `env` as `Shop::start` takes it.
pub fn refs(vars: &[(String, String)]) -> Vec<(&str, &str)> {
    vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A sandbox provider on a free loopback port, run by the test so it
/// outlives the shop processes: its handle and base URL.
pub fn sandbox() -> (actix_web::dev::ServerHandle, String) {
    let (server, port) = payment_sandbox::server("127.0.0.1", 0, 1).unwrap();
    let handle = server.handle();
    tokio::spawn(server);
    (handle, format!("http://127.0.0.1:{port}/"))
}

/// How many times the provider captured each of its authorizations.
pub async fn captures_per_authorization(client: &reqwest::Client, provider: &str) -> Vec<usize> {
    let all: Vec<Value> = send_json(client.get(format!("{provider}v1/authorizations"))).await;
    all.iter()
        .map(|a| {
            a["history"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| *s == "captured")
                .count()
        })
        .collect()
}

/// Whether each kind of event appears once in `kinds` (a timeline).
pub fn each_once(kinds: &[String]) -> bool {
    let mut seen = HashMap::new();
    for kind in kinds {
        *seen.entry(kind).or_insert(0) += 1;
    }
    seen.values().all(|n| *n == 1)
}

/// The provider's captures, one per confirmed order: `confirmed` of its
/// authorizations captured once each, none twice.
pub async fn assert_one_capture_per_confirmed_order(
    client: &reqwest::Client,
    provider: &str,
    confirmed: usize,
) {
    let captured: Vec<usize> = captures_per_authorization(client, provider)
        .await
        .into_iter()
        .filter(|n| *n > 0)
        .collect();
    assert_eq!(
        captured,
        vec![1; confirmed],
        "one capture per confirmed order"
    );
}

/// Every boundary of the forward run (success card) and of the
/// compensation (declined card: void, release, close).
const FORWARD: &[&str] = &[
    "before_reserve",
    "after_reserve",
    "after_reserve_recorded",
    "before_authorize",
    "after_authorize",
    "after_authorize_recorded",
    "before_commit",
    "after_commit",
    "after_commit_recorded",
    "before_capture",
    "after_capture",
    "after_capture_recorded",
    "before_confirm",
    "after_confirm_recorded",
];
const BACKWARD: &[&str] = &[
    "before_void",
    "after_void",
    "after_void_recorded",
    "before_release",
    "after_release",
    "after_release_recorded",
    "before_close",
    "after_close_recorded",
];

async fn crash_and_recover(point: &'static str, card: &'static str, provider: String) {
    let shop = Deployment::new().await;
    let admin = mint_token(&shop.settings, &[Role::Admin]);
    let token = customer_token(&shop.settings, Uuid::now_v7());
    let saga = [
        ("APP__PAYMENT__PROVIDER_URL", provider.as_str()),
        // A short lease, so the second process resumes soon; a step's
        // deadline under two thirds of it (the lease is renewed every
        // third on the way forward: `order.step_timeout_ms` is checked).
        ("APP__ORDER__LEASE_SECS", "2"),
        ("APP__ORDER__STEP_TIMEOUT_MS", "1300"),
        ("APP__ORDER__RECOVERY_INTERVAL_MS", "200"),
    ];
    let first_env = shop.env(&[&saga[..], &[("APP__ORDER__CRASH_AT", point)]].concat());
    let mut first = Shop::start(&refs(&first_env));
    first.wait_live().await;
    let client = crate::helpers::http();
    let base = first.url("");
    let sku = format!("CRASH-{}", Uuid::new_v4().simple()).to_uppercase()[..20].to_owned();
    let product = stocked_product(&client, &base, &admin, &sku, 500, 5).await;
    fill_cart(&client, &base, &token, &product, 2).await;
    // The process dies while the request runs.
    let answer = try_place(&client, &base, &token, "crash", card).await;
    assert!(
        first.exited().await,
        "{point}: the failpoint did not fire (answer: {:?}); logs:\n{}",
        answer.map(|r| r.status()),
        first.logs()
    );
    assert!(
        !first.logs().contains(card),
        "{point}: the card number was logged"
    );
    drop(first);

    let second = Shop::start(&refs(&shop.env(&saga)));
    second.wait_live().await;
    let base = second.url("");
    let orders: Value = get_json(&client, format!("{base}/api/v1/orders"), &token).await;
    let items = orders["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{point}: one order");
    let id = items[0]["id"].as_str().unwrap();
    let order = settled(&client, &base, &token, id).await;
    let (expected, stock_after) = if card == cards::SUCCEEDS {
        ("confirmed", (3, 0))
    } else {
        ("failed", (5, 0))
    };
    assert_eq!(
        order["status"],
        expected,
        "{point}: {order}\n{}",
        second.logs()
    );
    assert_eq!(
        stock(&client, &base, &admin, &sku).await,
        stock_after,
        "{point}"
    );
    let kinds = timeline(&client, &base, &token, id).await;
    assert!(each_once(&kinds), "{point}: each event once: {kinds:?}");
    if card == cards::DECLINED {
        // The declined payment is voided whichever process turned back:
        // the flag saying a payment may exist is recorded with the order.
        assert!(
            kinds.iter().any(|k| k == "payment_voided"),
            "{point}: {kinds:?}"
        );
    }
    assert!(
        !second.logs().contains(card),
        "{point}: the card number was logged"
    );

    // The provider: one authorization at most, captured once or never.
    let payment: Value = get_json(
        &client,
        format!("{base}/api/v1/payments/orders/{id}"),
        &token,
    )
    .await;
    let captures = captures_per_authorization(&client, &provider).await;
    assert!(
        captures.len() <= 1,
        "{point}: one authorization at most: {captures:?}"
    );
    if card == cards::SUCCEEDS {
        assert_eq!(payment["status"], "captured", "{point}: {payment}");
        assert!(!captures.is_empty(), "{point}");
        assert_eq!(
            captures.iter().sum::<usize>(),
            1,
            "{point}: exactly one capture: {captures:?}"
        );
    } else {
        assert_eq!(payment["status"], "declined", "{point}: {payment}");
    }

    // The last step keeps the placing request's answer with the order (one
    // transaction): killed right after it, the key answers a retry with
    // the settled order; killed before, the key is still in use (409)
    // until it goes stale.
    if matches!(point, "after_confirm_recorded" | "after_close_recorded") {
        let replay = try_place(&client, &base, &token, "crash", card)
            .await
            .unwrap();
        assert_eq!(replay.status(), 201, "{point}");
        assert_eq!(replay.headers()["idempotent-replayed"], "true", "{point}");
        let body: Value = replay.json().await.unwrap();
        assert_eq!(body, order, "{point}: the answer is the settled order");
    }
}

async fn run_all(points: &'static [&'static str], card: &'static str) {
    // A sandbox provider per point, so its counts are that order's; it
    // outlives both shop processes.
    let mut tasks = tokio::task::JoinSet::new();
    let mut providers = Vec::new();
    for point in points {
        let (handle, provider) = sandbox();
        providers.push(handle);
        tasks.spawn(crash_and_recover(point, card, provider));
        // Two at a time: each point runs a shop process (then another).
        while tasks.len() >= 2 {
            if let Some(result) = tasks.join_next().await {
                result.unwrap();
            }
        }
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    for provider in providers {
        provider.stop(false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_killed_at_any_step_boundary_is_confirmed_after_restart() {
    run_all(FORWARD, cards::SUCCEEDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensation_killed_at_any_step_boundary_completes_after_restart() {
    run_all(BACKWARD, cards::DECLINED).await;
}
