//! Webhooks: internal addresses refused, deliveries signed and retried, an
//! open breaker defers, a slow receiver holds no lock or transaction.

use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web as aweb};
use diesel::sql_types::{Nullable, Text};
use diesel_async::RunQueryDsl;
use kernel::Role;
use serde_json::{Value, json};

use crate::helpers::{
    assert_problem, eventually, get_json, notifications, product_json, spawn_app_with,
    subscribe_webhook,
};

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

/// A webhook receiver that holds each call until the test adds a permit
/// to `gate`, then answers 200; records the bodies as they arrive.
struct Held {
    url: String,
    gate: Arc<tokio::sync::Semaphore>,
    bodies: Arc<Mutex<Vec<String>>>,
    _server: actix_web::dev::ServerHandle,
}

impl Held {
    fn calls(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }
}

async fn held_receiver() -> Held {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let server = {
        let (gate, bodies) = (Arc::clone(&gate), Arc::clone(&bodies));
        HttpServer::new(move || {
            let (gate, bodies) = (Arc::clone(&gate), Arc::clone(&bodies));
            App::new().default_service(aweb::to(move |body: String| {
                let (gate, bodies) = (Arc::clone(&gate), Arc::clone(&bodies));
                async move {
                    bodies.lock().unwrap().push(body);
                    gate.acquire().await.unwrap().forget();
                    HttpResponse::Ok().finish()
                }
            }))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap()
    };
    let url = format!("http://127.0.0.1:{}/hook", server.addrs()[0].port());
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    Held {
        url,
        gate,
        bodies,
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
        let refused = subscribe_webhook(&app, &admin, url).await;
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
    // The allowed network is allowed; its `Location` reads it back.
    let allowed = subscribe_webhook(&app, &admin, "http://192.0.2.10/hook").await;
    assert_eq!(allowed.status(), 201);
    let location = allowed.headers()["location"].to_str().unwrap().to_owned();
    let read = app
        .client
        .get(app.url(&location))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let read: serde_json::Value = read.json().await.unwrap();
    assert_eq!(read["url"], "http://192.0.2.10/hook");
    assert!(read.get("secret").is_none(), "{read}");
    let deleted = app
        .client
        .delete(app.url(&location))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = app
        .client
        .get(app.url(&location))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_problem(gone, 404, "webhook_not_found").await;
}

/// Unknown event types are named once each, in one error, the first ten
/// of them: a body of thousands of repeats is not answered with thousands
/// of copies of the list of known types (megabytes for a 20 kB request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_event_types_are_answered_in_one_short_error() {
    let app = crate::helpers::spawn_app().await;
    let admin = app.token(&[Role::Admin]);
    let mut types: Vec<String> = vec!["x".to_owned(); 5000];
    types.extend((0..20).map(|i| format!("made.up.{i}")));
    types.push("catalog.product_created.v1".to_owned());
    let refused = app
        .client
        .post(app.url("/api/v1/admin/webhooks"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"url": "https://hooks.example.com/", "event_types": types}))
        .send()
        .await
        .unwrap();
    let length = refused.content_length();
    let body = assert_problem(refused, 422, "validation_failed").await;
    assert!(length.is_some_and(|n| n < 4096), "{length:?} bytes");
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{body}");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(message.contains("`made.up.0`"), "{message}");
    assert!(message.contains("and 11 more"), "{message}");
    assert!(
        message.contains("catalog.product_created.v1"),
        "the known ones: {message}"
    );
}

/// A webhook URL is at most 2048 characters: every message to it is kept
/// under a unique index that includes it, whose entries PostgreSQL limits
/// to 2.7 kB, so a longer one would have failed every event it subscribes
/// to. One of 2048 characters is taken and its messages are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_url_longer_than_2048_characters_is_refused_and_one_of_2048_delivers() {
    let app = spawn_app_with(&[]).await;
    let hook = receiver(0).await;
    let admin = app.token(&[Role::Admin]);
    let padded = |length: usize| {
        let mut url = format!("{}/", hook.url);
        while url.len() < length {
            url.push_str(&uuid::Uuid::new_v4().simple().to_string());
        }
        url.truncate(length);
        url
    };
    for length in [2049, 4000] {
        let refused = subscribe_webhook(&app, &admin, &padded(length)).await;
        let body = assert_problem(refused, 422, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], "url", "{length}: {body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("at most 2048 characters"),
            "{length}: {body}"
        );
    }
    // Stored normalised, each `'` of the query as `%27`: 2048 characters
    // that grow to 2601 are refused, to 2600 taken (and delivered to).
    let quoted = |quotes: usize| {
        let mut url = padded(2048 - quotes - 1);
        url.push('?');
        url.push_str(&"'".repeat(quotes));
        url
    };
    let refused = subscribe_webhook(&app, &admin, &quoted(277)).await;
    let body = assert_problem(refused, 422, "validation_failed").await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("2600"),
        "{body}"
    );
    let longest = padded(2048);
    let created = subscribe_webhook(&app, &admin, &longest).await;
    assert_eq!(created.status(), 201);
    let widest = quoted(276);
    let created = subscribe_webhook(&app, &admin, &widest).await;
    assert_eq!(created.status(), 201);
    app.post_product(&product_json("LONG-URL-1")).await;
    let sent = eventually("the webhooks to the longest URLs sent", || async {
        let sent: Vec<String> = notifications(&app)
            .await
            .into_iter()
            .filter(|n| n.channel == "webhook" && n.status == "sent")
            .map(|n| n.destination)
            .collect();
        (sent.len() == 2).then_some(sent)
    })
    .await;
    assert!(sent.contains(&longest), "{sent:?}");
    let stored = widest.replace('\'', "%27");
    assert_eq!(stored.len(), 2600);
    assert!(sent.contains(&stored), "{sent:?}");
    assert_eq!(hook.calls.lock().unwrap().len(), 2);
}

/// The shop keeps at most `notification.max_webhooks` subscriptions (each
/// is a call per subscribed event, and the admin's list is one page):
/// creations beyond it are refused with 409, also when they arrive at
/// once, and a deleted subscription frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_subscriptions_are_capped_even_when_created_at_once() {
    let app = spawn_app_with(&[
        ("APP__NOTIFICATION__WEBHOOK_ALLOW", "192.0.2.0/24"),
        ("APP__NOTIFICATION__MAX_WEBHOOKS", "3"),
    ])
    .await;
    let admin = app.token(&[Role::Admin]);
    let urls: Vec<String> = (1..=8)
        .map(|i| format!("http://192.0.2.{i}/hook"))
        .collect();
    let created =
        futures_util::future::join_all(urls.iter().map(|url| subscribe_webhook(&app, &admin, url)))
            .await;
    let mut statuses: Vec<u16> = created.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 201, 201, 409, 409, 409, 409, 409]);
    let refused = subscribe_webhook(&app, &admin, "http://192.0.2.99/hook").await;
    let body = assert_problem(refused, 409, "webhook_limit_reached").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("3 webhook subscriptions exist"),
        "{body}"
    );
    let list: Value = get_json(&app.client, app.url("/api/v1/admin/webhooks"), &admin).await;
    let kept = list.as_array().unwrap();
    assert_eq!(kept.len(), 3, "{list}");

    let id = kept[0]["id"].as_str().unwrap();
    let deleted = app
        .client
        .delete(app.url(&format!("/api/v1/admin/webhooks/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let again = subscribe_webhook(&app, &admin, "http://192.0.2.99/hook").await;
    assert_eq!(again.status(), 201);
    let list: Value = get_json(&app.client, app.url("/api/v1/admin/webhooks"), &admin).await;
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
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
    let created = subscribe_webhook(&app, &admin, &hook.url).await;
    assert_eq!(created.status(), 201);
    let subscription: Value = created.json().await.unwrap();
    let secret = subscription["secret"].as_str().unwrap().to_owned();
    let listed: Value = get_json(&app.client, app.url("/api/v1/admin/webhooks"), &admin).await;
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

/// A receiver that refuses its calls for a while (a 404 while it deploys,
/// a 401 until its secret is set) gets them once mended, though that takes
/// more than `max_attempts` tries: every message queued meanwhile meets the
/// same refusal. One refused past `refused_patience_secs` is given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_refuses_for_a_while_gets_its_deliveries_once_mended() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let app = spawn_app_with(&[
        ("APP__NOTIFICATION__MAX_ATTEMPTS", "2"),
        ("APP__NOTIFICATION__RETRY_BASE_MS", "50"),
        ("APP__NOTIFICATION__RETRY_MAX_MS", "100"),
        ("APP__NOTIFICATION__POLL_INTERVAL_MS", "50"),
        ("APP__NOTIFICATION__REFUSED_PATIENCE_SECS", "20"),
    ])
    .await;
    let mended = Arc::new(AtomicBool::new(false));
    let server = {
        let mended = Arc::clone(&mended);
        HttpServer::new(move || {
            let mended = Arc::clone(&mended);
            App::new().default_service(aweb::to(move |req: HttpRequest| {
                let mended = Arc::clone(&mended);
                async move {
                    match (req.path(), AtomicBool::load(&mended, Ordering::SeqCst)) {
                        ("/mended", true) => HttpResponse::Ok().finish(),
                        _ => HttpResponse::NotFound().finish(),
                    }
                }
            }))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap()
    };
    let port = server.addrs()[0].port();
    let server = server.run();
    let _server = server.handle();
    tokio::spawn(server);
    let admin = app.token(&[Role::Admin]);
    for path in ["mended", "never"] {
        let url = format!("http://127.0.0.1:{port}/{path}");
        assert_eq!(subscribe_webhook(&app, &admin, &url).await.status(), 201);
    }
    app.post_product(&product_json("REFUSED-1")).await;
    let webhook = |path: &'static str| {
        let app = &app;
        async move {
            notifications(app)
                .await
                .into_iter()
                .find(|n| n.channel == "webhook" && n.destination.ends_with(path))
        }
    };
    // Refused more often than max_attempts, and still pending.
    eventually("refused past max_attempts, still pending", || async {
        let n = webhook("/mended").await?;
        assert_ne!(n.status, "failed", "given up within its patience: {n:?}");
        (n.attempts > 3).then_some(())
    })
    .await;
    mended.store(true, Ordering::SeqCst);
    let sent = eventually("sent once mended", || async {
        webhook("/mended").await.filter(|n| n.status != "pending")
    })
    .await;
    assert_eq!(sent.status, "sent", "{sent:?}");
    // The other is refused for good: given up once past its patience.
    let given_up = eventually("given up past its patience", || async {
        webhook("/never").await.filter(|n| n.status != "pending")
    })
    .await;
    assert_eq!(given_up.status, "failed", "{given_up:?}");
    assert!(given_up.attempts > 2, "{given_up:?}");
}

/// Two subscriptions to one URL (how a webhook's secret is rotated: a new
/// subscription, then the old one deleted) each get their call, signed
/// with their own secret. (That a redelivered event adds nothing is
/// `events::duplicate_delivery_changes_nothing`'s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_subscriptions_to_one_url_each_get_their_signed_call() {
    let app = spawn_app_with(&[]).await;
    let hook = receiver(0).await;
    let admin = app.token(&[Role::Admin]);
    let mut secrets = Vec::new();
    for _ in 0..2 {
        let created = subscribe_webhook(&app, &admin, &hook.url).await;
        assert_eq!(created.status(), 201);
        let subscription: Value = created.json().await.unwrap();
        secrets.push(subscription["secret"].as_str().unwrap().to_owned());
    }
    app.post_product(&product_json("HOOK-TWICE")).await;
    eventually("both calls sent", || async {
        let sent = notifications(&app)
            .await
            .into_iter()
            .filter(|n| n.channel == "webhook" && n.status == "sent")
            .count();
        (sent == 2).then_some(())
    })
    .await;
    let calls = hook.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    let mut verified: Vec<usize> = calls
        .iter()
        .map(|(headers, body)| {
            let signature = headers.get("x-shop-signature").unwrap().to_str().unwrap();
            let (t, v1) = signature.split_once(",v1=").unwrap();
            let timestamp = t.strip_prefix("t=").unwrap();
            secrets
                .iter()
                .position(|secret| v1 == hmac_hex(secret, &format!("{timestamp}.{body}")))
                .expect("signed with one of the subscriptions' secrets")
        })
        .collect();
    verified.sort_unstable();
    assert_eq!(
        verified,
        vec![0, 1],
        "one call per subscription, each with its own secret"
    );
}

/// The sender claims a round's messages in a statement of its own and
/// sends them outside any transaction: while a receiver takes its time, the
/// message is claimed (due later, so no other sender takes it) but neither
/// locked nor inside an open transaction; once it answers, it is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_holds_no_lock_or_transaction_while_its_message_is_sent() {
    use diesel_async::AsyncConnection as _;
    // Time enough for the test to look while the receiver waits, however
    // slow the machine.
    let app = spawn_app_with(&[
        ("APP__RESILIENCE__WEBHOOKS__ATTEMPT_TIMEOUT_MS", "60000"),
        ("APP__RESILIENCE__WEBHOOKS__DEADLINE_MS", "60000"),
    ])
    .await;
    let held = held_receiver().await;
    let (url, gate) = (&held.url, &held.gate);
    let admin = app.token(&[Role::Admin]);
    assert_eq!(subscribe_webhook(&app, &admin, url).await.status(), 201);
    app.post_product(&product_json("SLOW-1")).await;

    eventually("the receiver to be called", || async {
        (held.calls() == 1).then_some(())
    })
    .await;
    let mut conn = app.db().await;
    let (in_flight, locked) = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            let row: InFlight = diesel::sql_query(
                "SELECT status, next_attempt_at > now() AS claimed, \
                 extract(epoch FROM next_attempt_at - now())::float8 AS lease_secs \
                 FROM notification.notifications WHERE channel = 'webhook'",
            )
            .get_result(conn)
            .await?;
            // Not locked by the sender: taken at once, without waiting.
            let locked = diesel::sql_query(
                "SELECT 1 FROM notification.notifications WHERE channel = 'webhook' \
                 FOR UPDATE NOWAIT",
            )
            .execute(conn)
            .await
            .is_err();
            Ok((row, locked))
        })
        .await
        .unwrap_or_else(|e| panic!("reading the message: {e}"));
    assert_eq!(in_flight.status, "pending");
    assert!(in_flight.claimed, "claimed for the lease while it is sent");
    assert!(
        in_flight.lease_secs > 170.0,
        "claimed for three times the longest send: {} s",
        in_flight.lease_secs
    );
    assert!(!locked, "no lock is held while the receiver takes its time");
    let open: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'shop/notification' \
         AND state LIKE 'idle in transaction%'",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(open.n, 0, "no transaction stays open while it is sent");

    gate.add_permits(1);
    let sent = eventually("the message recorded as sent", || async {
        notifications(&app)
            .await
            .into_iter()
            .find(|n| n.channel == "webhook" && n.status == "sent")
    })
    .await;
    assert_eq!(sent.attempts, 1);
    assert_eq!(held.calls(), 1, "sent once");
}

#[derive(diesel::QueryableByName)]
struct InFlight {
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    claimed: bool,
    #[diesel(sql_type = diesel::sql_types::Double)]
    lease_secs: f64,
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
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
    let created = subscribe_webhook(&app, app.token(&[Role::Admin]), &hook.url).await;
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

/// A receiver whose breaker is open is left out of the claims until its
/// wait is over: its due messages are not claimed only to be deferred,
/// round after round (two writes each, the whole backlog every wait).
/// The round under way when it opened stops at its first deferral.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_receiver_breaker_leaves_its_backlog_alone() {
    let app = spawn_app_with(&[
        ("APP__RESILIENCE__WEBHOOKS__BREAKER__WINDOW_SIZE", "2"),
        ("APP__RESILIENCE__WEBHOOKS__BREAKER__MINIMUM_CALLS", "2"),
        ("APP__RESILIENCE__WEBHOOKS__BREAKER__WAIT_OPEN_MS", "60000"),
    ])
    .await;
    let hook = receiver(usize::MAX).await; // always 500
    let created = subscribe_webhook(&app, app.token(&[Role::Admin]), &hook.url).await;
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    let subscription = created["id"].as_str().unwrap().to_owned();
    diesel::sql_query(
        "INSERT INTO notification.notifications \
         (id, event_id, event_type, channel, destination, subscription_id, subject, body) \
         SELECT gen_random_uuid(), gen_random_uuid(), 'catalog.product_created.v1', 'webhook', \
                $1, $2::uuid, 'catalog.product_created.v1', '{}' \
         FROM generate_series(1, 100)",
    )
    .bind::<Text, _>(&hook.url)
    .bind::<Text, _>(&subscription)
    .execute(&mut app.db().await)
    .await
    .unwrap();
    let touched = "SELECT count(*) AS n FROM notification.notifications \
                   WHERE channel = 'webhook' AND last_error IS NOT NULL";
    eventually("the receiver's breaker open", || async {
        let deferred = crate::helpers::count(
            &app,
            "SELECT count(*) AS n FROM notification.notifications \
             WHERE last_error = 'the circuit breaker is open'",
        )
        .await;
        (deferred >= 1).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let touched = crate::helpers::count(&app, touched).await;
    assert!(
        touched <= 3,
        "{touched} messages claimed and deferred while the breaker was open"
    );
    assert_eq!(hook.calls.lock().unwrap().len(), 2, "two real failures");
}

/// One receiver down must not stop the deliveries to the others: each
/// receiver's origin has a breaker of its own. (One breaker for every
/// webhook, as before, opened on the failing receiver and deferred every
/// subscriber's deliveries for its whole open time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_fails_opens_its_own_breaker_not_the_others() {
    let app = spawn_app_with(&[
        ("APP__NOTIFICATION__RETRY_BASE_MS", "20"),
        ("APP__NOTIFICATION__RETRY_MAX_MS", "50"),
        ("APP__RESILIENCE__WEBHOOKS__BREAKER__WINDOW_SIZE", "2"),
        ("APP__RESILIENCE__WEBHOOKS__BREAKER__MINIMUM_CALLS", "2"),
        (
            "APP__RESILIENCE__WEBHOOKS__BREAKER__WAIT_OPEN_MS",
            "3600000",
        ),
        // A loaded machine's slow answers must not open the other's.
        ("APP__RESILIENCE__WEBHOOKS__BREAKER__SLOW_CALL_MS", "60000"),
    ])
    .await;
    let down = receiver(usize::MAX).await; // always 500
    let up = receiver(0).await;
    let admin = app.token(&[Role::Admin]);
    assert_eq!(
        subscribe_webhook(&app, admin.clone(), &down.url)
            .await
            .status(),
        201
    );
    assert_eq!(subscribe_webhook(&app, admin, &up.url).await.status(), 201);
    app.post_product(&product_json("OWN-BREAKER-1")).await;

    let down_deferred = || async {
        let rows: Vec<Delivery> = diesel::sql_query(
            "SELECT attempts, status, last_error FROM notification.notifications \
             WHERE channel = 'webhook' AND destination = $1",
        )
        .bind::<Text, _>(&down.url)
        .load(&mut app.db().await)
        .await
        .unwrap();
        rows.into_iter()
            .next()
            .filter(|d| d.last_error.as_deref() == Some("the circuit breaker is open"))
    };
    eventually("the failing receiver's breaker to open", down_deferred).await;
    // With its breaker open for an hour, the other receiver still gets
    // this product's call and the next one's.
    app.post_product(&product_json("OWN-BREAKER-2")).await;
    eventually("both calls at the receiver that answers", || async {
        (up.calls.lock().unwrap().len() >= 2).then_some(())
    })
    .await;
    let bodies: Vec<String> = up
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| b.clone())
        .collect();
    for sku in ["OWN-BREAKER-1", "OWN-BREAKER-2"] {
        assert_eq!(
            bodies.iter().filter(|b| b.contains(sku)).count(),
            1,
            "{sku} once at the receiver that answers: {bodies:?}"
        );
    }
    assert_eq!(
        down.calls.lock().unwrap().len(),
        2,
        "no call while its breaker is open"
    );
}

/// A receiver that takes its time holds up its own messages only: while it
/// holds a call, the other receivers get theirs, including messages of
/// later events, and its own arrive afterwards in order, once each.
/// (The sender called one destination at a time: every delivery waited
/// for the held call, up to its timeout.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_holds_its_call_holds_up_only_its_own_messages() {
    let app = spawn_app_with(&[
        ("APP__RESILIENCE__WEBHOOKS__ATTEMPT_TIMEOUT_MS", "60000"),
        ("APP__RESILIENCE__WEBHOOKS__DEADLINE_MS", "60000"),
    ])
    .await;
    let held = held_receiver().await;
    let up = receiver(0).await;
    let admin = app.token(&[Role::Admin]);
    assert_eq!(
        subscribe_webhook(&app, &admin, &held.url).await.status(),
        201
    );
    assert_eq!(subscribe_webhook(&app, &admin, &up.url).await.status(), 201);
    app.post_product(&product_json("HELD-1")).await;
    eventually("the held receiver's first call", || async {
        (held.calls() == 1).then_some(())
    })
    .await;
    app.post_product(&product_json("HELD-2")).await;
    eventually("both calls at the other receiver", || async {
        (up.calls.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        held.calls(),
        1,
        "the held receiver is called one message at a time"
    );
    // The admin's emails of both products go out meanwhile too.
    eventually("both admin emails sent", || async {
        let all = notifications(&app).await;
        let emails: Vec<_> = all.iter().filter(|n| n.channel == "email").collect();
        (emails.len() == 2 && emails.iter().all(|n| n.status == "sent")).then_some(())
    })
    .await;
    assert_eq!(held.calls(), 1, "still held");

    held.gate.add_permits(2);
    eventually("every webhook message sent", || async {
        let all = notifications(&app).await;
        let webhooks: Vec<_> = all.iter().filter(|n| n.channel == "webhook").collect();
        (webhooks.len() == 4 && webhooks.iter().all(|n| n.status == "sent")).then_some(())
    })
    .await;
    let bodies = held.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "once each: {bodies:?}");
    assert!(
        bodies[0].contains("HELD-1") && bodies[1].contains("HELD-2"),
        "in order: {bodies:?}"
    );
}
