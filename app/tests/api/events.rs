//! Integration events end to end: outbox → relay → transport → inbox-deduplicated
//! handler → notification sent. The flow suite runs on both transports.

use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web as aweb};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::RunQueryDsl;
use kernel::Role;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, eventually, product_json, spawn_app_with};

#[derive(diesel::QueryableByName, Debug, Clone)]
struct Note {
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = Text)]
    channel: String,
    #[diesel(sql_type = Text)]
    destination: String,
    #[diesel(sql_type = Text)]
    subject: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Text>)]
    request_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    attempts: i32,
}

/// Every notification row, in the order they were queued.
async fn notifications(app: &TestApp) -> Vec<Note> {
    diesel::sql_query(
        "SELECT event_type, channel, destination, subject, status, request_id, attempts \
         FROM notification.notifications ORDER BY id",
    )
    .load(&mut app.db().await)
    .await
    .unwrap()
}

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

/// An app on the given transport (`rabbitmq` gets a namespace of its own).
pub async fn app_on(transport: &str, extra: &[(&str, &str)]) -> TestApp {
    let namespace = format!("test-{}", uuid::Uuid::new_v4().simple());
    let mut vars = vec![("APP__EVENTS__TRANSPORT", transport)];
    if transport == "rabbitmq" {
        vars.push(("APP__EVENTS__RABBITMQ__NAMESPACE", namespace.as_str()));
        vars.push(("APP__EVENTS__RABBITMQ__QUEUE_TTL_MS", "120000"));
    }
    vars.extend_from_slice(extra);
    spawn_app_with(&vars).await
}

/// A product created over HTTP becomes an admin email that is sent, carrying
/// the request id; the outbox row is marked delivered.
async fn a_product_event_becomes_a_sent_admin_email(transport: &str) {
    let app = app_on(transport, &[]).await;
    let response = app
        .client
        .post(app.url("/api/v1/products"))
        .bearer_auth(app.token(&[Role::Admin]))
        .header("x-request-id", "event-flow-1")
        .json(&product_json("EV-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let sent = eventually("the admin email to be sent", || async {
        notifications(&app)
            .await
            .into_iter()
            .find(|n| n.event_type == "catalog.product_created.v1" && n.status == "sent")
    })
    .await;
    assert_eq!(sent.channel, "email");
    assert_eq!(sent.destination, app.settings.notification.admin_email);
    assert_eq!(sent.subject, "New product: Product EV-1 (EV-1)");
    assert_eq!(sent.request_id.as_deref(), Some("event-flow-1"));
    assert_eq!(
        count(
            &app,
            "SELECT count(*) AS n FROM catalog.outbox WHERE delivered_at IS NULL"
        )
        .await,
        0
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let delivered =
        format!(r#"events_delivered_total{{module="catalog",transport="{transport}"}}"#);
    assert!(
        metrics.contains(&delivered),
        "the event went through {transport}:\n{metrics}"
    );

    // The development transport wrote the email as a file a person can open.
    let dir = &app.settings.notification.email.file_dir;
    let mail = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .find(|m| m.contains("Subject: New product: Product EV-1 (EV-1)"));
    assert!(mail.is_some(), "no .eml in {}", dir.display());
}

/// Delivering every event a second time changes nothing: the inbox skips it.
async fn duplicate_delivery_changes_nothing(transport: &str) {
    let app = app_on(transport, &[]).await;
    app.post_product(&product_json("DUP-EV")).await;
    app.register("dup@example.com", crate::helpers::PASSWORD)
        .await;
    eventually("both events handled", || async {
        (count(&app, "SELECT count(*) AS n FROM notification.inbox").await >= 2).then_some(())
    })
    .await;
    let before = notifications(&app).await.len();
    let handled = count(&app, "SELECT count(*) AS n FROM notification.inbox").await;

    // Put every delivered event back through the relay, as a redelivery would.
    for schema in ["catalog", "users"] {
        let sql = format!("UPDATE {schema}.outbox SET delivered_at = NULL");
        diesel::sql_query(sql)
            .execute(&mut app.db().await)
            .await
            .unwrap();
    }
    diesel::sql_query("NOTIFY shop_outbox_catalog")
        .execute(&mut app.db().await)
        .await
        .unwrap();
    eventually("the redelivered events to be relayed", || async {
        let pending = count(
            &app,
            "SELECT count(*) AS n FROM catalog.outbox WHERE delivered_at IS NULL",
        )
        .await
            + count(
                &app,
                "SELECT count(*) AS n FROM users.outbox WHERE delivered_at IS NULL",
            )
            .await;
        (pending == 0).then_some(())
    })
    .await;
    // Over RabbitMQ the consumer works after the publish; wait for its verdict.
    eventually("duplicates to be skipped", || async {
        let metrics = app.get("/metrics").await.text().await.unwrap();
        metrics
            .lines()
            .any(|l| l.starts_with("events_handled_total{") && l.contains("outcome=\"duplicate\""))
            .then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(notifications(&app).await.len(), before);
    assert_eq!(
        count(&app, "SELECT count(*) AS n FROM notification.inbox").await,
        handled
    );
}

/// Events of one product are handled in the order they happened.
async fn events_of_one_aggregate_keep_their_order(transport: &str) {
    let app = app_on(transport, &[]).await;
    let created: Value = app
        .post_product(&product_json("ORD-1"))
        .await
        .json()
        .await
        .unwrap();
    let url = app.url(&format!(
        "/api/v1/products/{}",
        created["id"].as_str().unwrap()
    ));
    let admin = app.token(&[Role::Admin]);
    for i in 1..=5 {
        let response = app
            .client
            .patch(&url)
            .bearer_auth(&admin)
            .json(&json!({"name": format!("Name {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let subjects = eventually("five update notifications", || async {
        let updates: Vec<String> = notifications(&app)
            .await
            .into_iter()
            .filter(|n| n.event_type == "catalog.product_updated.v1")
            .map(|n| n.subject)
            .collect();
        (updates.len() == 5).then_some(updates)
    })
    .await;
    let expected: Vec<String> = (1..=5)
        .map(|i| format!("Product changed: Name {i} (ORD-1)"))
        .collect();
    assert_eq!(subjects, expected);
}

/// The writer wakes its relay itself: with polling set to ten minutes and no
/// NOTIFY trigger left in the database, an event is still delivered at once.
async fn the_writer_wakes_its_relay(transport: &str) {
    let app = app_on(transport, &[("APP__EVENTS__POLL_INTERVAL_MS", "600000")]).await;
    assert_eq!(
        count(
            &app,
            "SELECT count(*) AS n FROM pg_trigger WHERE tgname = 'outbox_notify'"
        )
        .await,
        0,
        "no NOTIFY in the writers' transactions"
    );
    app.post_product(&product_json("WAKE-1")).await;
    eventually("the event to be delivered without a poll", || async {
        (count(
            &app,
            "SELECT count(*) AS n FROM catalog.outbox WHERE delivered_at IS NOT NULL",
        )
        .await
            >= 1)
            .then_some(())
    })
    .await;
}

macro_rules! event_flow_suite {
    ($transport:literal) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_product_event_becomes_a_sent_admin_email() {
            super::a_product_event_becomes_a_sent_admin_email($transport).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn duplicate_delivery_changes_nothing() {
            super::duplicate_delivery_changes_nothing($transport).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn events_of_one_aggregate_keep_their_order() {
            super::events_of_one_aggregate_keep_their_order($transport).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn the_writer_wakes_its_relay() {
            super::the_writer_wakes_its_relay($transport).await;
        }
    };
}

mod in_process {
    event_flow_suite!("in-process");
}

mod rabbitmq {
    event_flow_suite!("rabbitmq");

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readiness_reports_the_broker() {
        let app = super::app_on("rabbitmq", &[]).await;
        let ready: serde_json::Value = app.ready().await.json().await.unwrap();
        assert_eq!(
            ready["checks"]["broker:rabbitmq"]["status"], "up",
            "{ready}"
        );
    }
}

/// A webhook receiver: records requests, answers 500 to the first `failures`.
pub(crate) struct Receiver {
    pub(crate) url: String,
    pub(crate) calls: Arc<Mutex<Vec<(actix_web::http::header::HeaderMap, String)>>>,
    _server: actix_web::dev::ServerHandle,
}

pub(crate) async fn receiver(failures: usize) -> Receiver {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    let server = HttpServer::new(move || {
        let seen = Arc::clone(&seen);
        App::new().default_service(aweb::to(move |req: HttpRequest, body: String| {
            let seen = Arc::clone(&seen);
            async move {
                let mut calls = seen.lock().unwrap();
                calls.push((req.headers().clone(), body));
                if calls.len() <= failures {
                    HttpResponse::InternalServerError().finish()
                } else {
                    HttpResponse::Ok().finish()
                }
            }
        }))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    Receiver {
        url: format!("http://127.0.0.1:{port}/hook"),
        calls,
        _server: handle,
    }
}

fn hmac_hex(secret: &str, message: &str) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Webhooks cannot be aimed at the shop's own network: a URL whose host
/// is, or resolves to, an internal address is refused when subscribed, in
/// every spelling, unless `notification.webhook_allow` names its network
/// (here it names only a documentation network, as production names none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_to_internal_addresses_are_refused_in_every_spelling() {
    let app = spawn_app_with(&[("APP__NOTIFICATION__WEBHOOK_ALLOW", "192.0.2.0/24")]).await;
    let admin = app.token(&[Role::Admin]);
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://localhost./hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://2130706433/hook",
        "http://0177.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/hook",
        "http://[fd00:ec2::254]/",
    ] {
        let refused = app
            .client
            .post(app.url("/api/v1/admin/webhooks"))
            .bearer_auth(&admin)
            .json(&json!({"url": url, "event_types": ["catalog.product_created.v1"]}))
            .send()
            .await
            .unwrap();
        let body = assert_problem(refused, 422, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], "url", "{url}: {body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("internal address"),
            "{url}: {body}"
        );
    }
    // The allowed network is allowed.
    let allowed = app
        .client
        .post(app.url("/api/v1/admin/webhooks"))
        .bearer_auth(&admin)
        .json(&json!({"url": "http://192.0.2.10/hook", "event_types": ["catalog.product_created.v1"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_and_retried_until_accepted() {
    let app = spawn_app_with(&[
        ("APP__NOTIFICATION__RETRY_BASE_MS", "50"),
        ("APP__NOTIFICATION__RETRY_MAX_MS", "100"),
    ])
    .await;
    let hook = receiver(2).await;
    let admin = app.token(&[Role::Admin]);
    let created = app
        .client
        .post(app.url("/api/v1/admin/webhooks"))
        .bearer_auth(&admin)
        .json(&json!({"url": hook.url, "event_types": ["catalog.product_created.v1"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let subscription: Value = created.json().await.unwrap();
    let secret = subscription["secret"].as_str().unwrap().to_owned();
    let listed: Value = app
        .client
        .get(app.url("/api/v1/admin/webhooks"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed[0].get("secret").is_none(), "secrets are shown once");

    let bad = app
        .client
        .post(app.url("/api/v1/admin/webhooks"))
        .bearer_auth(&admin)
        .json(&json!({"url": "ftp://x", "event_types": ["nope.v1"]}))
        .send()
        .await
        .unwrap();
    assert_problem(bad, 422, "validation_failed").await;

    app.post_product(&product_json("HOOK-1")).await;
    let webhook = eventually("the webhook to be sent", || async {
        notifications(&app)
            .await
            .into_iter()
            .find(|n| n.channel == "webhook" && n.status == "sent")
    })
    .await;
    assert_eq!(webhook.attempts, 3, "two 500s, then accepted");

    let calls = hook.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3);
    let (headers, body) = &calls[2];
    assert_eq!(
        headers.get("x-shop-event").unwrap(),
        "catalog.product_created.v1"
    );
    let signature = headers.get("x-shop-signature").unwrap().to_str().unwrap();
    let (t, v1) = signature.split_once(",v1=").unwrap();
    let timestamp = t.strip_prefix("t=").unwrap();
    assert_eq!(
        v1,
        hmac_hex(&secret, &format!("{timestamp}.{body}")),
        "signature verifies"
    );
    let envelope: Value = serde_json::from_str(body).unwrap();
    assert_eq!(envelope["type"], "catalog.product_created.v1");
    assert_eq!(envelope["payload"]["sku"], "HOOK-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_goes_out_over_smtp() {
    let sink = testkit::smtp::SmtpSink::start().await;
    let port = sink.port().to_string();
    let app = spawn_app_with(&[
        ("APP__NOTIFICATION__EMAIL__TRANSPORT", "smtp"),
        ("APP__NOTIFICATION__EMAIL__SMTP_HOST", "127.0.0.1"),
        ("APP__NOTIFICATION__EMAIL__SMTP_PORT", port.as_str()),
        ("APP__NOTIFICATION__ADMIN_EMAIL", "ops@example.com"),
    ])
    .await;
    app.register("smtp-user@example.com", crate::helpers::PASSWORD)
        .await;
    app.post_product(&product_json("SMTP-1")).await;

    let mails = eventually("two mails at the SMTP server", || async {
        let mails = sink.mails();
        (mails.len() >= 2).then_some(mails)
    })
    .await;
    let welcome = mails
        .iter()
        .find(|m| m.to == ["smtp-user@example.com"])
        .expect("welcome mail");
    assert!(
        welcome.data.contains("Subject: Welcome to the shop"),
        "{}",
        welcome.data
    );
    let admin = mails
        .iter()
        .find(|m| m.to == ["ops@example.com"])
        .expect("admin mail");
    assert!(
        admin
            .data
            .contains("Subject: New product: Product SMTP-1 (SMTP-1)"),
        "{}",
        admin.data
    );
    assert_eq!(admin.from, "shop@shop.localhost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn price_drops_reach_only_users_who_opted_in() {
    let app = spawn_app_with(&[]).await;
    let keen = app.customer("keen@example.com").await;
    app.customer("quiet@example.com").await;
    let prefs = json!({"notification_preferences": {"order_updates": true, "product_news": true, "marketing": false}});
    let opted = app
        .client
        .patch(app.url("/api/v1/users/me"))
        .bearer_auth(keen["access_token"].as_str().unwrap())
        .json(&prefs)
        .send()
        .await
        .unwrap();
    assert_eq!(opted.status(), 200);
    eventually("the opt-in to reach the notification module", || async {
        (count(
            &app,
            "SELECT count(*) AS n FROM notification.recipients WHERE product_news",
        )
        .await
            == 1)
            .then_some(())
    })
    .await;

    let created: Value = app
        .post_product(&product_json("DROP-1"))
        .await
        .json()
        .await
        .unwrap();
    let url = app.url(&format!(
        "/api/v1/products/{}",
        created["id"].as_str().unwrap()
    ));
    app.client
        .patch(&url)
        .bearer_auth(app.token(&[Role::Admin]))
        .json(&json!({"price": {"amount_minor": 999, "currency": "EUR"}}))
        .send()
        .await
        .unwrap();
    let drops = eventually("the price-drop email", || async {
        let drops: Vec<Note> = notifications(&app)
            .await
            .into_iter()
            .filter(|n| n.subject.starts_with("Price drop"))
            .collect();
        (!drops.is_empty()).then_some(drops)
    })
    .await;
    assert_eq!(drops.len(), 1);
    assert_eq!(drops[0].destination, "keen@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_their_own_notifications_and_admins_all() {
    let app = spawn_app_with(&[]).await;
    let ada = app.customer("ada@example.com").await;
    app.customer("bob@example.com").await;
    app.post_product(&product_json("MINE-1")).await;
    eventually("three notifications", || async {
        (notifications(&app).await.len() >= 3).then_some(())
    })
    .await;

    let own: Value = app
        .client
        .get(app.url("/api/v1/notifications"))
        .bearer_auth(ada["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = own["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{own}");
    assert_eq!(items[0]["destination"], "ada@example.com");

    let all: Value = app
        .client
        .get(app.url("/api/v1/notifications?limit=2"))
        .bearer_auth(app.token(&[Role::Admin]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    assert!(all["next_cursor"].is_string());
    assert_problem(
        app.get("/api/v1/notifications").await,
        401,
        "unauthenticated",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_and_can_be_redriven() {
    let app = spawn_app_with(&[
        ("APP__EVENTS__MAX_ATTEMPTS", "3"),
        ("APP__EVENTS__RETRY_BASE_MS", "10"),
    ])
    .await;
    // An event whose payload no handler can read, as a buggy publisher might write.
    let envelope = json!({
        "id": uuid::Uuid::now_v7(), "type": "catalog.product_created.v1", "source": "catalog",
        "aggregate_id": "x", "occurred_at": chrono::Utc::now(), "request_id": "poison-1",
        "causation_id": null, "payload": {"not": "a product"}
    });
    diesel::sql_query("INSERT INTO catalog.outbox (id, event_type, aggregate_id, envelope) VALUES ($1::uuid, 'catalog.product_created.v1', 'x', $2)")
        .bind::<Text, _>(envelope["id"].as_str().unwrap())
        .bind::<diesel::sql_types::Jsonb, _>(&envelope)
        .execute(&mut app.db().await)
        .await
        .unwrap();

    let admin = app.token(&[Role::Admin]);
    let page: Value = eventually("the dead letter", || async {
        let page: Value = app
            .client
            .get(app.url("/api/v1/admin/dead-letters"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (!page["items"].as_array().unwrap().is_empty()).then_some(page)
    })
    .await;
    let dead = &page["items"][0];
    assert_eq!(dead["handler"], "notification.notify");
    assert_eq!(dead["attempts"], 3);
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .contains("catalog.product_created.v1"),
        "{dead}"
    );
    // The outbox moved on: a poison event does not block the events behind it.
    assert_eq!(
        count(
            &app,
            "SELECT count(*) AS n FROM catalog.outbox WHERE delivered_at IS NULL"
        )
        .await,
        0
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(
            r#"events_handled_total{handler="notification.notify",outcome="dead_lettered"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"events_handled_total{handler="notification.notify",outcome="retried"} 2"#),
        "{metrics}"
    );

    let customer = app
        .client
        .get(app.url("/api/v1/admin/dead-letters"))
        .bearer_auth(app.token(&[Role::Customer]))
        .send()
        .await
        .unwrap();
    assert_problem(customer, 403, "forbidden").await;

    // Redriving a still-broken event fails and says why; fixing the data lets it through.
    let id = dead["id"].as_str().unwrap();
    let redrive = |path: String| {
        let client = app.client.clone();
        let admin = admin.clone();
        async move { client.post(path).bearer_auth(admin).send().await.unwrap() }
    };
    let again = redrive(app.url(&format!("/api/v1/admin/dead-letters/{id}/redrive"))).await;
    assert_problem(again, 409, "redrive_failed").await;
    let product = json!({"product_id": uuid::Uuid::now_v7(), "sku": "FIXED-1", "name": "Fixed", "price": {"amount_minor": 1, "currency": "EUR"}, "active": true});
    diesel::sql_query("UPDATE notification.dead_letters SET envelope = jsonb_set(envelope, '{payload}', $1) WHERE id = $2::uuid")
        .bind::<diesel::sql_types::Jsonb, _>(&product)
        .bind::<Text, _>(id)
        .execute(&mut app.db().await)
        .await
        .unwrap();
    let fixed = redrive(app.url(&format!("/api/v1/admin/dead-letters/{id}/redrive"))).await;
    assert_eq!(fixed.status(), 200);
    let missing = redrive(app.url(&format!("/api/v1/admin/dead-letters/{id}/redrive"))).await;
    assert_problem(missing, 404, "dead_letter_not_found").await;
    let fixed_mail = notifications(&app)
        .await
        .into_iter()
        .find(|n| n.subject.contains("FIXED-1"));
    assert_eq!(fixed_mail.unwrap().request_id.as_deref(), Some("poison-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_outbox_lag_and_deliveries() {
    let app = spawn_app_with(&[]).await;
    app.post_product(&product_json("MET-1")).await;
    // Delivery and handling are counted at different moments: wait for all.
    let expected = [
        r#"events_delivered_total{module="catalog",transport="in-process"}"#,
        r#"outbox_lag_seconds{module="catalog"}"#,
        r#"events_handled_total{handler="notification.notify",outcome="handled"}"#,
    ];
    let metrics = eventually("delivery and handling metrics", || async {
        let text = app.get("/metrics").await.text().await.unwrap();
        expected.iter().all(|m| text.contains(m)).then_some(text)
    })
    .await;
    for m in expected {
        assert!(metrics.contains(m), "{m} missing in:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_rows_are_pruned_after_the_retention() {
    let app = spawn_app_with(&[
        ("APP__EVENTS__RETENTION_HOURS", "0"),
        ("APP__EVENTS__PRUNE_INTERVAL_SECS", "1"),
    ])
    .await;
    app.post_product(&product_json("PRUNE-1")).await;
    eventually("the event to be handled", || async {
        (count(&app, "SELECT count(*) AS n FROM notification.inbox").await == 1).then_some(())
    })
    .await;
    eventually("delivered outbox and inbox rows to be pruned", || async {
        let left = count(&app, "SELECT count(*) AS n FROM catalog.outbox").await
            + count(&app, "SELECT count(*) AS n FROM notification.inbox").await;
        (left == 0).then_some(())
    })
    .await;
    // The product and its notification stay: only messaging bookkeeping goes.
    assert_eq!(
        count(&app, "SELECT count(*) AS n FROM catalog.products").await,
        1
    );
    assert_eq!(notifications(&app).await.len(), 1);
}

#[derive(diesel::QueryableByName)]
struct Delivery {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    attempts: i32,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_webhook_breaker_defers_deliveries_without_spending_attempts() {
    let app = spawn_app_with(&[
        ("APP__NOTIFICATION__RETRY_BASE_MS", "20"),
        ("APP__NOTIFICATION__RETRY_MAX_MS", "50"),
        ("APP__RESILIENCE__WEBHOOKS__BREAKER__WINDOW_SIZE", "2"),
        ("APP__RESILIENCE__WEBHOOKS__BREAKER__MINIMUM_CALLS", "2"),
        ("APP__RESILIENCE__WEBHOOKS__BREAKER__WAIT_OPEN_MS", "60000"),
    ])
    .await;
    let hook = receiver(usize::MAX).await; // always 500
    let created = app
        .client
        .post(app.url("/api/v1/admin/webhooks"))
        .bearer_auth(app.token(&[Role::Admin]))
        .json(&json!({"url": hook.url, "event_types": ["catalog.product_created.v1"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    app.post_product(&product_json("BREAKER-1")).await;

    let delivery = || async {
        let rows: Vec<Delivery> = diesel::sql_query(
            "SELECT attempts, status, last_error FROM notification.notifications \
             WHERE channel = 'webhook'",
        )
        .load(&mut app.db().await)
        .await
        .unwrap();
        rows.into_iter().next()
    };
    eventually("the breaker to defer the delivery", || async {
        delivery()
            .await
            .filter(|d| d.last_error.as_deref() == Some("the circuit breaker is open"))
    })
    .await;
    // With 20-50 ms between attempts, spent attempts would pile up by now.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let deferred = delivery().await.unwrap();
    assert_eq!(deferred.attempts, 2, "two real failures opened the breaker");
    assert_eq!(deferred.status, "pending", "deferred, not given up");
    assert_eq!(
        hook.calls.lock().unwrap().len(),
        2,
        "no call while the breaker is open"
    );
}
