//! Crash safety with real processes killed by SIGKILL: an event committed
//! but not delivered is delivered after restart; a handler killed mid-way
//! leaves nothing behind and runs again.

use std::time::Duration;

use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl};
use kernel::Role;
use testkit::TestDatabase;

use crate::helpers::{
    Shop, UNDELIVERED, eventually, free_port, fresh_key_path, fresh_mail_dir, mint_token,
    product_json, test_database, test_settings,
};

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

pub(crate) async fn count(url: &str, sql: &str) -> i64 {
    let mut conn = AsyncPgConnection::establish(url).await.unwrap();
    diesel::sql_query(sql)
        .get_result::<Count>(&mut conn)
        .await
        .unwrap()
        .n
}

fn env<'a>(db: &'a str, key: &'a str, mail: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("DATABASE_URL", db),
        ("APP__AUTH__SIGNING_KEY_FILE", key),
        ("APP__NOTIFICATION__EMAIL__FILE_DIR", mail),
        ("APP__EVENTS__POLL_INTERVAL_MS", "100"),
        ("APP__NOTIFICATION__POLL_INTERVAL_MS", "50"),
    ]
}

async fn create_product(shop: &Shop, token: &str, sku: &str) {
    let response = crate::helpers::http()
        .post(shop.url("/api/v1/products"))
        .bearer_auth(token)
        .header("x-request-id", format!("req-{sku}"))
        .json(&product_json(sku))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

/// What outlives the `shop` processes a test kills and restarts: the
/// database, the signing key, the mail directory and the port, and an
/// admin's token.
struct Site {
    db: TestDatabase,
    key: String,
    mail: String,
    token: String,
    port: u16,
}

impl Site {
    async fn new() -> Site {
        let db = test_database().await;
        let (key, mail) = (fresh_key_path(), fresh_mail_dir());
        let token = mint_token(
            &test_settings(None, &[("APP__AUTH__SIGNING_KEY_FILE", key.as_str())]),
            &[Role::Admin],
        );
        let port = free_port();
        Site {
            db,
            key,
            mail,
            token,
            port,
        }
    }

    /// A live `shop` on the site's port, with `extra` settings.
    async fn start(&self, extra: &[(&str, &str)]) -> Shop {
        let mut vars = env(self.db.url(), &self.key, &self.mail);
        vars.extend_from_slice(extra);
        let shop = Shop::start_on(self.port, &vars);
        shop.wait_live().await;
        shop
    }

    async fn count(&self, sql: &str) -> i64 {
        count(self.db.url(), sql).await
    }

    /// Waits until the notification of the product `sku` is sent, once.
    async fn sent_once(&self, what: &str, sku: &str) {
        let sql = format!(
            "SELECT count(*) AS n FROM notification.notifications WHERE subject LIKE '%{sku}%' AND status = 'sent'"
        );
        eventually(what, || async {
            (self.count(&sql).await == 1).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_before_a_crash_is_delivered_after_restart() {
    let site = Site::new().await;

    // The relay is off: the product and its event commit, nothing is delivered.
    let shop = site.start(&[("APP__EVENTS__RELAY_ENABLED", "false")]).await;
    create_product(&shop, &site.token, "CRASH-1").await;
    assert_eq!(site.count(UNDELIVERED).await, 1);
    drop(shop); // SIGKILL

    let _shop = site.start(&[]).await;
    site.sent_once("the event to be delivered after the restart", "CRASH-1")
        .await;
    assert_eq!(site.count(UNDELIVERED).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_killed_mid_transaction_leaves_nothing_and_runs_again() {
    let site = Site::new().await;

    // Each handler pauses inside its transaction, after its writes.
    let shop = site
        .start(&[("APP__EVENTS__PAUSE_IN_HANDLER_MS", "30000")])
        .await;
    create_product(&shop, &site.token, "CRASH-2").await;
    eventually(
        "the handler to be paused inside its transaction",
        || async {
            shop.logs()
                .contains("fault injection: pausing")
                .then_some(())
        },
    )
    .await;
    // Its writes are made but uncommitted; kill the process now.
    drop(shop);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        site.count("SELECT count(*) AS n FROM notification.notifications")
            .await,
        0,
        "no half-done effects"
    );
    assert_eq!(
        site.count("SELECT count(*) AS n FROM notification.inbox")
            .await,
        0
    );
    assert_eq!(site.count(UNDELIVERED).await, 1);

    let _shop = site.start(&[]).await;
    site.sent_once("the event to be handled once after the restart", "CRASH-2")
        .await;
    // Exactly once: one inbox row, one notification for the event.
    #[derive(diesel::QueryableByName)]
    struct Handler {
        #[diesel(sql_type = Text)]
        handler: String,
    }
    let mut conn = AsyncPgConnection::establish(site.db.url()).await.unwrap();
    let handled: Vec<Handler> = diesel::sql_query("SELECT handler FROM notification.inbox")
        .load(&mut conn)
        .await
        .unwrap();
    assert_eq!(handled.len(), 1);
    assert_eq!(handled[0].handler, "notification.notify");
    assert_eq!(
        site.count("SELECT count(*) AS n FROM notification.notifications")
            .await,
        1
    );
}

/// SIGTERM stops accepting work but lets a request in flight finish with
/// its answer, then the process exits 0: a rolling update loses no request
/// that had started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_request_in_flight_finish_then_exits_cleanly() {
    use crate::checkout::shop::{customer_token, fill_cart, place, stocked_product};
    let deployment = crate::saga_crash::Deployment::new().await;
    let shop = Shop::start(&crate::saga_crash::refs(
        &deployment.env(&[("APP__ORDER__CHECKOUT_WAIT_MS", "4000")]),
    ));
    shop.wait_live().await;
    let (client, base) = (crate::helpers::http(), shop.url(""));
    let admin = mint_token(&deployment.settings, &[Role::Admin]);
    let customer = customer_token(&deployment.settings, uuid::Uuid::now_v7());
    let product = stocked_product(&client, &base, &admin, "TERM-1", 500, 3).await;
    fill_cart(&client, &base, &customer, &product, 1).await;
    // This card's provider answers after 30 s: the checkout holds the
    // request for its 4 s wait, then answers 202.
    let in_flight = {
        let (client, base, customer) = (client.clone(), base.clone(), customer.clone());
        tokio::spawn(async move {
            place(
                &client,
                &base,
                &customer,
                "term",
                payment_sandbox::cards::TIMES_OUT,
            )
            .await
        })
    };
    // In flight: its idempotency key is taken.
    let db = deployment.db.url().to_owned();
    eventually("the checkout to be in flight", || {
        let db = db.clone();
        async move {
            let taken = count(
                &db,
                "SELECT count(*) AS n FROM orders.idempotency_keys WHERE key = 'term'",
            )
            .await;
            (taken == 1).then_some(())
        }
    })
    .await;
    assert!(!in_flight.is_finished(), "still waiting for its answer");
    let stopping = tokio::task::spawn_blocking(move || shop.terminate());
    let answered = in_flight.await.unwrap();
    assert_eq!(
        answered.status(),
        202,
        "the request in flight got its answer"
    );
    let status = stopping.await.unwrap();
    assert!(status.success(), "{status:?}");
}
