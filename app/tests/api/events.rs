//! Integration events end to end: outbox → relay → transport → inbox-deduplicated
//! handler → notification sent. The flow suite runs on both transports.

use diesel_async::RunQueryDsl;
use kernel::Role;
use serde_json::json;

use crate::helpers::{
    TestApp, UNDELIVERED, count, create, eventually, notifications, product_json, spawn_app_with,
    undelivered,
};

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

/// The notification module's section of `app`'s settings.
fn notification_settings(app: &TestApp) -> &notification::Settings {
    app.settings
        .section()
        .expect("the notification module is compiled in")
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
    assert_eq!(sent.destination, notification_settings(&app).admin_email);
    assert_eq!(sent.subject, "New product: Product EV-1 (EV-1)");
    assert_eq!(sent.request_id.as_deref(), Some("event-flow-1"));
    assert_eq!(undelivered(&app).await, 0);
    let metrics = app.metrics().await;
    let delivered =
        format!(r#"events_delivered_total{{module="catalog",transport="{transport}"}}"#);
    assert!(
        metrics.contains(&delivered),
        "the event went through {transport}:\n{metrics}"
    );

    // The development transport wrote the email as a file a person can open.
    let dir = &notification_settings(&app).email.file_dir;
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
        let pending = count(&app, UNDELIVERED).await
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
        let metrics = app.metrics().await;
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
    let (url, _) = create(&app, "ORD-1").await;
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

/// A `NOTIFY shop_outbox_<schema>` by hand wakes that schema's relay,
/// and one LISTEN connection serves the relays of every module on the
/// database. Polling is set to ten minutes, and the rows are made pending
/// again by SQL, which wakes no relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_by_hand_wakes_the_relays_of_its_schema_over_one_connection() {
    let app = app_on("in-process", &[("APP__EVENTS__POLL_INTERVAL_MS", "600000")]).await;
    app.post_product(&product_json("NOTIFY-1")).await;
    let registered = app
        .register("notify@example.com", crate::helpers::PASSWORD)
        .await;
    assert_eq!(registered.status(), 201);
    let delivered = |schema: &'static str| {
        format!("SELECT count(*) AS n FROM {schema}.outbox WHERE delivered_at IS NOT NULL")
    };
    eventually("both events delivered", || async {
        (count(&app, &delivered("catalog")).await >= 1
            && count(&app, &delivered("users")).await >= 1)
            .then_some(())
    })
    .await;
    // (The catalog's cache listens on a connection of its own, for
    // `shop_catalog_products`: `catalog::changes`.)
    let listening = "SELECT count(*) AS n FROM pg_stat_activity \
        WHERE datname = current_database() AND query LIKE 'LISTEN shop\\_outbox\\_%'";
    assert_eq!(
        count(&app, listening).await,
        1,
        "one LISTEN connection for all relays"
    );

    for schema in ["catalog", "users"] {
        diesel::sql_query(format!("UPDATE {schema}.outbox SET delivered_at = NULL"))
            .execute(&mut app.db().await)
            .await
            .unwrap();
    }
    diesel::sql_query("NOTIFY shop_outbox_users")
        .execute(&mut app.db().await)
        .await
        .unwrap();
    eventually("the users' relay woken by NOTIFY", || async {
        (count(&app, &delivered("users")).await >= 1).then_some(())
    })
    .await;
    assert_eq!(
        count(&app, &delivered("catalog")).await,
        0,
        "a NOTIFY wakes the relay of its own schema only"
    );
    diesel::sql_query("NOTIFY shop_outbox_catalog")
        .execute(&mut app.db().await)
        .await
        .unwrap();
    eventually("the catalog's relay woken by NOTIFY", || async {
        (count(&app, &delivered("catalog")).await >= 1).then_some(())
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

    /// A broker that accepts connections and answers nothing (a node
    /// gone without refusing, a network that drops packets) leaves the
    /// shop ready, "degraded", answering at once: a reconnect waiting on
    /// the broker does not hold readiness (it did, until the kubelet's
    /// timeout took every pod out of service). The reconnect gives up in
    /// seconds and the next one finds the broker back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_broker_leaves_readiness_answering_degraded() {
        let settings = crate::helpers::test_settings(None, &[]);
        let mut url = reqwest::Url::parse(&settings.events.rabbitmq.url).unwrap();
        let proxy = testkit::fault::FaultProxy::start(url.port().unwrap_or(5672)).await;
        url.set_port(Some(proxy.port())).unwrap();
        let url = url.to_string();
        let app = super::app_on("rabbitmq", &[("APP__EVENTS__RABBITMQ__URL", &url)]).await;
        let ready: serde_json::Value = app.ready().await.json().await.unwrap();
        assert_eq!(ready["status"], "ready", "{ready}");

        // Every connection cut; new ones reach nothing for a minute.
        proxy.set(testkit::fault::Fault::Latency(
            std::time::Duration::from_secs(60),
        ));
        proxy.stop_listening();
        proxy.resume().await;
        crate::helpers::eventually("a reconnect under way", || async {
            (proxy.connections() > 1).then_some(())
        })
        .await;
        for _ in 0..3 {
            let answer = tokio::time::timeout(std::time::Duration::from_secs(3), app.ready())
                .await
                .expect("readiness answers while the broker is silent");
            assert_eq!(answer.status(), 200);
            let ready: serde_json::Value = answer.json().await.unwrap();
            assert_eq!(ready["status"], "degraded", "{ready}");
            assert_eq!(
                ready["checks"]["broker:rabbitmq"]["status"], "down",
                "{ready}"
            );
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }

        proxy.set(testkit::fault::Fault::Pass);
        crate::helpers::eventually("the broker reconnected", || async {
            let ready: serde_json::Value = app.ready().await.json().await.ok()?;
            (ready["status"] == "ready").then_some(())
        })
        .await;
    }
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
        let text = app.metrics().await;
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
    // Handled: the notification is written in the inbox row's transaction.
    // Not the inbox row itself: with a retention of 0 the next prune (each
    // second) may take it before a poll sees it, on a slow machine.
    eventually("the event to be handled", || async {
        (notifications(&app).await.len() == 1).then_some(())
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

/// A week of rows is pruned in batches by key, all of it (one DELETE of it
/// all ran into the statement timeout and deleted nothing, every time),
/// and only what is old enough and settled: an old event not delivered
/// yet, and rows younger than the retention, stay. The event ids are
/// UUID v7 made two days back (their first 48 bits are the time), and one
/// random id (as older rows were made) is found by age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_old_rows_are_pruned_in_batches_and_only_those() {
    use diesel_async::SimpleAsyncConnection as _;
    let app = spawn_app_with(&[
        ("APP__EVENTS__RETENTION_HOURS", "24"),
        ("APP__EVENTS__PRUNE_INTERVAL_SECS", "1"),
    ])
    .await;
    // An id of `ms` milliseconds since the epoch, numbered `n`.
    let v7 = "(lpad(to_hex(ms), 12, '0') || '7000' || '8000' || lpad(to_hex(n), 12, '0'))::uuid";
    let old = "(extract(epoch FROM now() - interval '2 days') * 1000)::bigint";
    let young = "(extract(epoch FROM now() - interval '1 hour') * 1000)::bigint";
    app.db()
        .await
        .batch_execute(&format!(
            "INSERT INTO catalog.outbox (id, event_type, aggregate_id, envelope, created_at, delivered_at) \
             SELECT {v7}, 'test.old.v1', 'a', '{{}}', now() - interval '2 days', \
               CASE WHEN n <= 12000 THEN now() - interval '2 days' END \
             FROM (SELECT {old} AS ms, n FROM generate_series(1, 12003) AS n) AS t; \
             INSERT INTO catalog.outbox (id, event_type, aggregate_id, envelope, delivered_at) \
             SELECT {v7}, 'test.young.v1', 'a', '{{}}', now() - interval '1 hour' \
             FROM (SELECT {young} AS ms, n FROM generate_series(1, 5) AS n) AS t; \
             INSERT INTO notification.inbox (event_id, handler, handled_at) \
             SELECT {v7}, 'test', now() - interval '2 days' \
             FROM (SELECT {old} AS ms, n FROM generate_series(1, 11000) AS n) AS t; \
             INSERT INTO catalog.outbox (id, event_type, aggregate_id, envelope, delivered_at) \
             VALUES ('ffffffff-0000-4000-8000-000000000001', 'test.old.v1', 'a', '{{}}', \
               now() - interval '2 days')"
        ))
        .await
        .unwrap();
    eventually("every old settled row pruned", || async {
        let left = count(
            &app,
            "SELECT count(*) AS n FROM catalog.outbox WHERE event_type = 'test.old.v1'",
        )
        .await
            + count(
                &app,
                "SELECT count(*) AS n FROM notification.inbox WHERE handler = 'test'",
            )
            .await;
        (left == 3).then_some(())
    })
    .await;
    assert_eq!(
        count(
            &app,
            "SELECT count(*) AS n FROM catalog.outbox \
             WHERE event_type = 'test.old.v1' AND delivered_at IS NULL"
        )
        .await,
        3,
        "the old undelivered ones stay"
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) AS n FROM catalog.outbox WHERE event_type = 'test.young.v1'"
        )
        .await,
        5,
        "the young ones stay"
    );
}

/// A broker that stops reading its publishers (a memory or disk alarm
/// blocks them and closes nothing) fails a publish once its confirm is
/// overdue, instead of holding the relay, and the relay's transaction,
/// for as long as the alarm lasts. The event stays unmarked and is sent
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_broker_never_confirms_fails_in_time() {
    use events::Transport as _;
    let settings = crate::helpers::test_settings(None, &[]);
    let mut rabbit = settings.events.rabbitmq.clone();
    let mut url = reqwest::Url::parse(&rabbit.url).unwrap();
    let proxy = testkit::fault::FaultProxy::start(url.port().unwrap_or(5672)).await;
    url.set_port(Some(proxy.port())).unwrap();
    rabbit.url = url.to_string();
    rabbit.namespace = format!("test-{}", uuid::Uuid::new_v4().simple());
    rabbit.queue_ttl_ms = Some(120_000);
    let (key, _) = auth::SigningKey::generate();
    let broker = events::rabbitmq::RabbitMq::connect(rabbit, auth::EventSeal::new(&key).unwrap())
        .await
        .unwrap();
    let event = || -> kernel::Envelope {
        serde_json::from_value(json!({
            "id": uuid::Uuid::now_v7(), "type": "test.nobody_listens.v1", "source": "test",
            "aggregate_id": "a", "occurred_at": chrono::Utc::now(),
            "request_id": null, "causation_id": null, "payload": {},
        }))
        .unwrap()
    };
    broker.publish(&event()).await.unwrap();

    proxy.stall(true);
    // Every publish while it lasts: the one whose confirm is overdue, and
    // the next, on a channel the broker does not even open.
    for _ in 0..2 {
        let refused =
            tokio::time::timeout(std::time::Duration::from_secs(60), broker.publish(&event()))
                .await
                .expect("the publish still waits on the broker");
        let error = refused.expect_err("a publish the broker never confirmed");
        let error = error.to_string();
        assert!(
            error.contains("confirmed no publish") || error.contains("did not open a channel"),
            "{error}"
        );
    }

    // The broker reads again: the next publish goes through.
    proxy.stall(false);
    let sent = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            match broker.publish(&event()).await {
                Ok(()) => break,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
    })
    .await;
    assert!(
        sent.is_ok(),
        "no publish went through once the broker read again"
    );
}

/// The events exchange deleted under a running shop (by hand, or the
/// broker's definitions reset): the next publish fails and closes its
/// channel; the one after declares the exchange again, and the queues'
/// bindings that went with it, and the event arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_exchange_deleted_under_the_shop_is_declared_again() {
    use lapin::options::ExchangeDeleteOptions;
    use lapin::{Connection, ConnectionProperties};

    let app = app_on("rabbitmq", &[]).await;
    let rabbit = &app.settings.events.rabbitmq;
    // A first event through, so the publisher's channel is open.
    app.post_product(&product_json("EXCHANGE-1")).await;
    eventually("the first event delivered", || async {
        (undelivered(&app).await == 0).then_some(())
    })
    .await;
    let connection = Connection::connect(&rabbit.url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .exchange_delete(
            format!("{}.events", rabbit.namespace).as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await
        .unwrap();

    app.post_product(&product_json("EXCHANGE-2")).await;
    eventually(
        "the admin email of the product after the deletion",
        || async {
            notifications(&app).await.into_iter().find(|n| {
                n.event_type == "catalog.product_created.v1"
                    && n.status == "sent"
                    && n.subject.contains("EXCHANGE-2")
            })
        },
    )
    .await;
    assert_eq!(undelivered(&app).await, 0);
}

/// The dead-letter queue deleted under a running shop: a message rejected
/// to it (here a forged one) is not dropped by the broker for want of a
/// queue; the consumer declares the queue again before it rejects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_message_reaches_a_dead_letter_queue_deleted_under_the_shop() {
    use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    let app = app_on("rabbitmq", &[]).await;
    let rabbit = &app.settings.events.rabbitmq;
    let ns = rabbit.namespace.clone();
    let dead_letters = format!("{ns}.dead-letters");
    let connection = Connection::connect(&rabbit.url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_delete(dead_letters.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    // Unsigned: the notification module's consumer rejects it.
    let forged = serde_json::to_vec(&json!({
        "id": uuid::Uuid::now_v7(), "type": "user.registered.v1", "source": "user",
        "aggregate_id": "x", "occurred_at": chrono::Utc::now(),
        "request_id": null, "causation_id": null, "payload": {}
    }))
    .unwrap();
    channel
        .basic_publish(
            format!("{ns}.events").as_str().into(),
            "user.registered.v1".into(),
            BasicPublishOptions::default(),
            &forged,
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    eventually("the forged message in the dead-letter queue", || async {
        // Passive: the queue as it is, never declared here.
        let channel = connection.create_channel().await.ok()?;
        let queue = channel
            .queue_declare(
                dead_letters.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .ok()?;
        (queue.message_count() == 1).then_some(())
    })
    .await;
}

/// An event of a type none of the module's handlers takes, on the module's
/// queue: what a rolling upgrade makes when a newer version subscribes the
/// module to a new type (its binding reaches the queue before every
/// consumer runs the newer code). The older consumer gives it back instead
/// of acking it away, so a consumer that knows it (here the test, standing
/// for the newer instance) receives it; one that nobody has taken for a
/// quarter of an hour goes to the dead-letter queue, not round for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_type_no_handler_here_takes_is_left_for_a_consumer_that_does() {
    use futures_util::StreamExt as _;
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
        QueueBindOptions,
    };
    use lapin::types::{AMQPValue, FieldTable};
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    let app = app_on("rabbitmq", &[]).await;
    let rabbit = &app.settings.events.rabbitmq;
    let ns = rabbit.namespace.clone();
    let queue = format!("{ns}.notification");
    let new_type = "catalog.product_renamed.v1";
    let connection = Connection::connect(&rabbit.url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    // The binding a newer version declares for the module's new subscription.
    channel
        .queue_bind(
            queue.as_str().into(),
            format!("{ns}.events").as_str().into(),
            new_type.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let services = app::compose::service_tokens(&app.settings).unwrap();
    let seal = auth::EventSeal::new(services.key()).unwrap();
    let publish = |id: uuid::Uuid,
                   occurred_at: chrono::DateTime<chrono::Utc>,
                   published: Option<chrono::DateTime<chrono::Utc>>| {
        let body = serde_json::to_vec(&json!({
            "id": id, "type": new_type, "source": "catalog",
            "aggregate_id": "p-1", "occurred_at": occurred_at,
            "request_id": null, "causation_id": null, "payload": {"name": "Renamed"}
        }))
        .unwrap();
        let mut headers = FieldTable::default();
        headers.insert(
            "x-shop-signature".into(),
            AMQPValue::LongString(seal.sign(&body).unwrap().as_str().into()),
        );
        let mut properties = BasicProperties::default().with_headers(headers);
        if let Some(at) = published {
            properties = properties.with_timestamp(at.timestamp().try_into().unwrap());
        }
        let channel = channel.clone();
        let exchange = format!("{ns}.events");
        async move {
            channel
                .basic_publish(
                    exchange.as_str().into(),
                    new_type.into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    let (young, old, late) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    let an_hour_ago = chrono::Utc::now() - chrono::TimeDelta::hours(1);
    // Published an hour ago (as code older than the message timestamp
    // sends it: its event's time stands for it).
    publish(old, an_hour_ago, None).await;
    publish(young, chrono::Utc::now(), Some(chrono::Utc::now())).await;
    // An hour in an outbox (a broker outage), published now: new to the queue.
    publish(late, an_hour_ago, Some(chrono::Utc::now())).await;

    // The old one: nobody took it in time; dead-lettered.
    let dead_letters = format!("{ns}.dead-letters");
    eventually(
        "the old event of the unknown type dead-lettered",
        || async {
            let got = channel
                .basic_get(
                    dead_letters.as_str().into(),
                    BasicGetOptions { no_ack: true },
                )
                .await
                .ok()??;
            let event: serde_json::Value = serde_json::from_slice(&got.delivery.data).ok()?;
            (event["id"] == json!(old)).then_some(())
        },
    )
    .await;

    // A burst of them, more than a consumer's prefetch (32), holds up
    // none of the module's own events: each goes to the back of the queue,
    // where a requeue would put it back at the head, for every consumer's
    // prefetch to fill with them again.
    for _ in 0..40 {
        publish(
            uuid::Uuid::now_v7(),
            chrono::Utc::now(),
            Some(chrono::Utc::now()),
        )
        .await;
    }
    create(&app, "UNKNOWN-BURST").await;
    eventually(
        "the product's admin email queued behind the burst",
        || async {
            (count(
                &app,
                "SELECT count(*) AS n FROM notification.notifications \
             WHERE event_type = 'catalog.product_created.v1'",
            )
            .await
                > 0)
            .then_some(())
        },
    )
    .await;

    // The young and the late one are still offered: a consumer that takes
    // the type gets them.
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "newer-instance".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let received = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let mut waiting = vec![json!(young), json!(late)];
        while let Some(Ok(delivery)) = consumer.next().await {
            delivery.ack(BasicAckOptions::default()).await.unwrap();
            let event: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
            waiting.retain(|id| *id != event["id"]);
            if waiting.is_empty() {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        received,
        Ok(true),
        "the event of a type the shop's consumer does not take was acked away"
    );
    assert!(
        app.metrics()
            .await
            .contains(r#"events_requeued_total{module="notification",reason="unknown_type"}"#),
        "the give-back is counted"
    );
}
