//! A relay's batch in process: each subscription takes its share in one
//! transaction; an event that fails sends the share one by one, so that
//! only it is retried and dead-lettered; the inbox skips what was handled.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::sql_types::BigInt;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use events::{Dispatcher, EventHandler, EventsSettings, HandlerError, Subscription};
use kernel::Envelope;
use uuid::Uuid;

use crate::helpers::test_database;

/// Remembers each event it handles with the id of the transaction that
/// handled it; refuses `poison`, and panics at `panic_on`.
struct Recorder {
    handled: Mutex<Vec<(Uuid, i64)>>,
    poison: Option<Uuid>,
    panic_on: Option<Uuid>,
}

#[derive(diesel::QueryableByName)]
struct Txid {
    #[diesel(sql_type = BigInt)]
    txid: i64,
}

#[async_trait::async_trait]
impl EventHandler for Recorder {
    async fn handle(
        &self,
        conn: &mut AsyncPgConnection,
        event: &Envelope,
    ) -> Result<(), HandlerError> {
        if Some(event.id) == self.poison {
            return Err(HandlerError::new("this one always fails"));
        }
        assert!(Some(event.id) != self.panic_on, "a bug meets this one");
        let Txid { txid } = diesel::sql_query("SELECT txid_current() AS txid")
            .get_result(conn)
            .await?;
        self.handled.lock().unwrap().push((event.id, txid));
        Ok(())
    }
}

fn settings() -> EventsSettings {
    EventsSettings {
        transport: events::TransportKind::InProcess,
        relay_enabled: false,
        poll_interval_ms: 1000,
        batch_window_ms: 2,
        batch_size: 100,
        max_attempts: 2,
        retry_base_ms: 1,
        retry_max_ms: 5,
        retention_hours: 24,
        prune_interval_secs: 3600,
        pause_in_handler_ms: 0,
        rabbitmq: events::RabbitMqSettings {
            url: String::new(),
            namespace: String::new(),
            prefetch: 1,
            queue_ttl_ms: None,
        },
    }
}

fn event(event_type: &str) -> Envelope {
    serde_json::from_value(serde_json::json!({
        "id": Uuid::now_v7(),
        "type": event_type,
        "source": "test",
        "aggregate_id": "a",
        "occurred_at": chrono::Utc::now(),
        "request_id": null,
        "causation_id": null,
        "payload": {},
    }))
    .unwrap()
}

/// A small pool over `schema` of `database`.
fn pool(database: &testkit::TestDatabase, schema: &'static str) -> db::Pool {
    db::build_pool(&db::PoolOptions {
        url: database.url().to_owned(),
        schema,
        max_size: 2,
        runtimes: 1,
        acquire_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
    })
    .unwrap()
}

/// A dispatcher with one subscription (to `test.wanted.v1`) in the
/// catalog's schema of a fresh database.
async fn scene(
    poison: Option<Uuid>,
) -> (testkit::TestDatabase, Dispatcher, Arc<Recorder>, db::Pool) {
    scene_with(poison, None).await
}

async fn scene_with(
    poison: Option<Uuid>,
    panic_on: Option<Uuid>,
) -> (testkit::TestDatabase, Dispatcher, Arc<Recorder>, db::Pool) {
    let database = test_database().await;
    let pool = pool(&database, "catalog");
    let recorder = Arc::new(Recorder {
        handled: Mutex::default(),
        poison,
        panic_on,
    });
    let subscription = Subscription {
        module: "catalog",
        name: "test.recorder",
        event_types: vec!["test.wanted.v1"],
        handler: Arc::clone(&recorder) as Arc<dyn EventHandler>,
        pool: pool.clone(),
    };
    let dispatcher = Dispatcher::new(vec![subscription], &settings());
    (database, dispatcher, recorder, pool)
}

async fn count(pool: &db::Pool, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = pool.get().await.unwrap();
    let Count { n } = diesel::sql_query(sql).get_result(&mut conn).await.unwrap();
    n
}

#[tokio::test]
async fn a_batch_is_handled_in_one_transaction_and_only_once() {
    let (_database, dispatcher, recorder, pool) = scene(None).await;
    let batch = [
        event("test.wanted.v1"),
        event("test.other.v1"),
        event("test.wanted.v1"),
        event("test.wanted.v1"),
    ];
    let refs: Vec<&Envelope> = batch.iter().collect();

    dispatcher.dispatch_batch(&refs).await.unwrap();
    let handled = recorder.handled.lock().unwrap().clone();
    let ids: Vec<Uuid> = handled.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        vec![batch[0].id, batch[2].id, batch[3].id],
        "in order, wanted only"
    );
    assert!(
        handled.iter().all(|(_, txid)| *txid == handled[0].1),
        "one transaction for the batch: {handled:?}"
    );
    let sql = "SELECT count(*) AS n FROM inbox WHERE handler = 'test.recorder'";
    assert_eq!(count(&pool, sql).await, 3);

    // Offered again (a relay that crashed before marking it delivered):
    // nothing runs twice.
    dispatcher.dispatch_batch(&refs).await.unwrap();
    assert_eq!(recorder.handled.lock().unwrap().len(), 3);
    assert_eq!(count(&pool, sql).await, 3);
}

#[tokio::test]
async fn a_failing_event_is_dead_lettered_alone_and_the_rest_handled() {
    let poison = event("test.wanted.v1");
    let (_database, dispatcher, recorder, pool) = scene(Some(poison.id)).await;
    let batch = [event("test.wanted.v1"), poison, event("test.wanted.v1")];
    let refs: Vec<&Envelope> = batch.iter().collect();

    dispatcher.dispatch_batch(&refs).await.unwrap();
    let handled = recorder.handled.lock().unwrap().clone();
    // The batch's transaction handled the first event, then rolled back at
    // the poison; one by one, the first and the last were handled again,
    // each in a transaction of its own.
    let committed: Vec<Uuid> = handled[handled.len() - 2..]
        .iter()
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(committed, vec![batch[0].id, batch[2].id]);
    assert_ne!(handled[handled.len() - 2].1, handled[handled.len() - 1].1);
    let inbox = "SELECT count(*) AS n FROM inbox WHERE handler = 'test.recorder'";
    assert_eq!(count(&pool, inbox).await, 2);
    let dead = format!(
        "SELECT count(*) AS n FROM dead_letters WHERE event_id = '{}' AND attempts = 2",
        batch[1].id
    );
    assert_eq!(count(&pool, &dead).await, 1);
}

/// A handler that panics on an event fails like one that returns an error:
/// retried, then dead-lettered, and the events after it are handled. In a
/// batch (the relay in process) and alone (a RabbitMQ consumer's delivery):
/// a panic unwound into either would end it, and with it every later event
/// of the module in that process.
#[tokio::test]
async fn a_handler_that_panics_fails_like_one_that_refuses() {
    let bug = event("test.wanted.v1");
    let (_database, dispatcher, recorder, pool) = scene_with(None, Some(bug.id)).await;
    let batch = [event("test.wanted.v1"), bug, event("test.wanted.v1")];
    let refs: Vec<&Envelope> = batch.iter().collect();

    dispatcher.dispatch_batch(&refs).await.unwrap();
    let inbox = "SELECT count(*) AS n FROM inbox WHERE handler = 'test.recorder'";
    assert_eq!(count(&pool, inbox).await, 2);
    let dead = format!(
        "SELECT count(*) AS n FROM dead_letters WHERE event_id = '{}' \
         AND attempts = 2 AND last_error LIKE 'the handler panicked: a bug meets this one%'",
        batch[1].id
    );
    assert_eq!(count(&pool, &dead).await, 1);

    // Delivered alone, as a consumer takes it: the same, and the next one
    // is handled.
    let again = [event("test.wanted.v1"), event("test.wanted.v1")];
    let (_database, dispatcher, recorder_alone, pool) = scene_with(None, Some(again[0].id)).await;
    dispatcher.dispatch(&again[0], None).await.unwrap();
    dispatcher.dispatch(&again[1], None).await.unwrap();
    assert_eq!(count(&pool, inbox).await, 1);
    let dead = format!(
        "SELECT count(*) AS n FROM dead_letters WHERE event_id = '{}'",
        again[0].id
    );
    assert_eq!(count(&pool, &dead).await, 1);
    let handled: Vec<Uuid> = recorder_alone
        .handled
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(handled, vec![again[1].id]);
    drop(recorder);
}

/// When the database cannot take an event now (no connection within the
/// pool's wait), the event is not dead-lettered after its few quick
/// attempts: the dispatch says it could not be handled, so the consumer or
/// the relay offers it again, and it is handled once the database answers.
#[tokio::test]
async fn an_event_the_database_cannot_take_now_is_offered_again_not_dead_lettered() {
    let database = test_database().await;
    let pool = db::build_pool(&db::PoolOptions {
        url: database.url().to_owned(),
        schema: "catalog",
        max_size: 2,
        runtimes: 1,
        acquire_timeout: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
    })
    .unwrap();
    let recorder = Arc::new(Recorder {
        handled: Mutex::default(),
        poison: None,
        panic_on: None,
    });
    let subscription = Subscription {
        module: "catalog",
        name: "test.recorder",
        event_types: vec!["test.wanted.v1"],
        handler: Arc::clone(&recorder) as Arc<dyn EventHandler>,
        pool: pool.clone(),
    };
    let dispatcher = Dispatcher::new(vec![subscription], &settings());
    // Every connection of the pool taken (by a burst of requests, say).
    let mut held = Vec::new();
    while let Ok(conn) = pool.get().await {
        held.push(conn);
        assert!(held.len() <= 10, "the pool has no limit");
    }
    let wanted = event("test.wanted.v1");
    let refused = dispatcher.dispatch(&wanted, None).await;
    assert!(refused.is_err(), "{refused:?}");
    let refused = dispatcher.dispatch_batch(&[&wanted]).await;
    assert!(refused.is_err(), "{refused:?}");
    drop(held);
    let dead = "SELECT count(*) AS n FROM dead_letters";
    assert_eq!(count(&pool, dead).await, 0);

    // Offered again once the database answers: handled, once.
    dispatcher.dispatch(&wanted, None).await.unwrap();
    dispatcher.dispatch(&wanted, None).await.unwrap();
    let handled: Vec<Uuid> = recorder
        .handled
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(handled, vec![wanted.id]);
    assert_eq!(count(&pool, dead).await, 0);
}

/// Writes a product for `sku` straight into the catalog's table.
async fn product(pool: &db::Pool, sku: &str) {
    let mut conn = pool.get().await.unwrap();
    diesel::sql_query(
        "INSERT INTO catalog.products (id, sku, name, price_amount_minor, price_currency) \
         VALUES (gen_random_uuid(), $1, $1, 100, 'EUR')",
    )
    .bind::<diesel::sql_types::Text, _>(sku)
    .execute(&mut conn)
    .await
    .unwrap();
}

async fn availability(pool: &db::Pool, sku: &str) -> String {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        availability: String,
    }
    let mut conn = pool.get().await.unwrap();
    let Row { availability } =
        diesel::sql_query("SELECT availability FROM catalog.products WHERE sku = $1")
            .bind::<diesel::sql_types::Text, _>(sku)
            .get_result(&mut conn)
            .await
            .unwrap();
    availability
}

fn stock_changed(sku: &str, available: i32, threshold: i32) -> Envelope {
    versioned(sku, available, threshold, None)
}

fn versioned(sku: &str, available: i32, threshold: i32, version: Option<i64>) -> Envelope {
    let change = inventory_api::events::StockChanged {
        sku: catalog_api::Sku::parse(sku).unwrap(),
        on_hand: available,
        reserved: 0,
        available,
        low_stock_threshold: Some(threshold),
        version,
    };
    Envelope::new("inventory", &kernel::CallContext::background(), &change).unwrap()
}

/// The catalog takes a batch's stock changes in one statement: each SKU ends
/// where its last change in the batch puts it (as one by one), a SKU it does
/// not sell is skipped, and the events are marked handled.
#[tokio::test]
async fn the_catalog_takes_a_batch_of_stock_changes_as_one_by_one() {
    let (_database, _dispatcher, _recorder, pool) = scene(None).await;
    for sku in ["BATCH-A", "BATCH-B", "BATCH-C"] {
        product(&pool, sku).await;
    }
    let subscription = Subscription {
        module: "catalog",
        name: catalog::events::HANDLER,
        event_types: catalog::events::EVENT_TYPES.to_vec(),
        handler: Arc::new(catalog::CatalogEvents::new(catalog::ProductCache::off())),
        pool: pool.clone(),
    };
    let dispatcher = Dispatcher::new(vec![subscription], &settings());
    let batch = [
        stock_changed("BATCH-A", 5, 3),
        stock_changed("BATCH-B", 0, 3),
        stock_changed("NOT-SOLD", 1, 3),
        stock_changed("BATCH-C", 2, 3),
        stock_changed("BATCH-B", 10, 3),
    ];
    let refs: Vec<&Envelope> = batch.iter().collect();

    dispatcher.dispatch_batch(&refs).await.unwrap();
    assert_eq!(availability(&pool, "BATCH-A").await, "in_stock");
    assert_eq!(
        availability(&pool, "BATCH-B").await,
        "in_stock",
        "the last change of a SKU stands"
    );
    assert_eq!(availability(&pool, "BATCH-C").await, "low_stock");
    let sql = format!(
        "SELECT count(*) AS n FROM inbox WHERE handler = '{}'",
        catalog::events::HANDLER
    );
    assert_eq!(count(&pool, &sql).await, 5);
    // Had the batch failed, one by one would have written the same rows,
    // each in a transaction of its own.
    let transactions = "SELECT count(DISTINCT xmin::text) AS n FROM inbox";
    assert_eq!(count(&pool, transactions).await, 1, "one transaction");

    // A later batch that takes B out of stock and leaves A as it is.
    let later = [
        stock_changed("BATCH-A", 4, 3),
        stock_changed("BATCH-B", 0, 3),
    ];
    let refs: Vec<&Envelope> = later.iter().collect();
    dispatcher.dispatch_batch(&refs).await.unwrap();
    assert_eq!(availability(&pool, "BATCH-A").await, "in_stock");
    assert_eq!(availability(&pool, "BATCH-B").await, "out_of_stock");
}

/// Stock events can arrive out of order (several consumers of one broker
/// queue, a requeued or redriven message): the catalog keeps the newest
/// stock version it has seen, and an older event changes nothing, alone or
/// in a batch, for a product or for a SKU it does not sell yet.
#[tokio::test]
async fn the_catalog_keeps_the_newest_stock_level_whatever_order_it_arrives_in() {
    let (_database, _dispatcher, _recorder, pool) = scene(None).await;
    product(&pool, "LATE-A").await;
    let subscription = Subscription {
        module: "catalog",
        name: catalog::events::HANDLER,
        event_types: catalog::events::EVENT_TYPES.to_vec(),
        handler: Arc::new(catalog::CatalogEvents::new(catalog::ProductCache::off())),
        pool: pool.clone(),
    };
    let dispatcher = Dispatcher::new(vec![subscription], &settings());
    let deliver = |batch: Vec<Envelope>| {
        let dispatcher = &dispatcher;
        async move {
            let refs: Vec<&Envelope> = batch.iter().collect();
            dispatcher.dispatch_batch(&refs).await.unwrap();
        }
    };
    // (available, version) -> in stock above 3, low at 1..=3, out at 0.
    let at = |available, version| versioned("LATE-A", available, 3, Some(version));

    deliver(vec![at(0, 3)]).await;
    assert_eq!(availability(&pool, "LATE-A").await, "out_of_stock");
    deliver(vec![at(10, 2)]).await;
    assert_eq!(
        availability(&pool, "LATE-A").await,
        "out_of_stock",
        "an older level, delivered late, changes nothing"
    );
    deliver(vec![at(2, 6), at(10, 5)]).await;
    assert_eq!(
        availability(&pool, "LATE-A").await,
        "low_stock",
        "the newest of a batch stands, not the last"
    );
    // A newer level with the same availability is kept too: it is what
    // an older one arriving after it must lose to.
    deliver(vec![at(1, 8)]).await;
    deliver(vec![at(10, 7)]).await;
    assert_eq!(availability(&pool, "LATE-A").await, "low_stock");
    deliver(vec![stock_changed("LATE-A", 10, 3)]).await;
    assert_eq!(
        availability(&pool, "LATE-A").await,
        "in_stock",
        "an event from before versions is taken as it comes, as it was"
    );
    deliver(vec![at(0, 7)]).await;
    assert_eq!(
        availability(&pool, "LATE-A").await,
        "in_stock",
        "the newest version taken stays: an older event still loses"
    );
    deliver(vec![at(0, 9)]).await;
    assert_eq!(availability(&pool, "LATE-A").await, "out_of_stock");

    // A SKU not sold yet: its product starts from the newest level.
    deliver(vec![versioned("LATE-B", 0, 3, Some(4))]).await;
    deliver(vec![versioned("LATE-B", 10, 3, Some(2))]).await;
    product(&pool, "LATE-B").await;
    assert_eq!(availability(&pool, "LATE-B").await, "out_of_stock");
}

/// A change that announces several events writes them with one statement,
/// and the relay's order (`seq`) is the order they were pushed in.
#[tokio::test]
async fn the_outbox_keeps_a_batch_in_the_order_it_was_pushed() {
    let (_database, _dispatcher, _recorder, pool) = scene(None).await;
    let cx = kernel::CallContext::background();
    let mut conn = pool.get().await.unwrap();
    let mut batch = events::outbox::Batch::new("inventory", &cx);
    let mut pushed = Vec::new();
    for (sku, available) in [("ORDER-C", 3), ("ORDER-A", 1), ("ORDER-B", 2)] {
        let change = inventory_api::events::StockChanged {
            sku: catalog_api::Sku::parse(sku).unwrap(),
            on_hand: available,
            reserved: 0,
            available,
            low_stock_threshold: None,
            version: None,
        };
        pushed.push(batch.push(&change).unwrap());
    }
    batch.write(&conn).await.unwrap();

    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: Uuid,
    }
    let written: Vec<Row> = diesel::sql_query("SELECT id FROM outbox ORDER BY seq")
        .load(&mut conn)
        .await
        .unwrap();
    let written: Vec<Uuid> = written.into_iter().map(|r| r.id).collect();
    assert_eq!(written, pushed);
}

/// The notification handler over the notification schema of a fresh
/// database, with a webhook subscribed to confirmations.
async fn notification_scene() -> (testkit::TestDatabase, Dispatcher, db::Pool) {
    let database = test_database().await;
    let pool = pool(&database, "notification");
    let mut conn = pool.get().await.unwrap();
    diesel::sql_query(
        "INSERT INTO webhook_subscriptions (id, url, secret, event_types) \
         VALUES (gen_random_uuid(), 'http://127.0.0.1:9/hook', 'secret', ARRAY['order.confirmed.v1'])",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let subscription = Subscription {
        module: "notification",
        name: notification::HANDLER,
        event_types: notification::EVENT_TYPES.to_vec(),
        handler: Arc::new(notification::NotificationHandler::new(
            "admin@example.com".to_owned(),
        )),
        pool: pool.clone(),
    };
    let dispatcher = Dispatcher::new(vec![subscription], &settings());
    (database, dispatcher, pool)
}

fn envelope<E: kernel::IntegrationEvent>(event: &E) -> Envelope {
    Envelope::new("test", &kernel::CallContext::background(), event).unwrap()
}

/// Every queued message as (event, channel, destination, subject, body), in
/// the order they were queued.
async fn queued(pool: &db::Pool) -> Vec<(Uuid, String, String, String, String)> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        event_id: Uuid,
        #[diesel(sql_type = diesel::sql_types::Text)]
        channel: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        destination: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        subject: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        body: String,
    }
    let mut conn = pool.get().await.unwrap();
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT event_id, channel, destination, subject, body FROM notifications ORDER BY id",
    )
    .load(&mut conn)
    .await
    .unwrap();
    rows.into_iter()
        .map(|r| (r.event_id, r.channel, r.destination, r.subject, r.body))
        .collect()
}

/// A batch of order updates takes one statement per kind of work, and
/// queues the same messages, in the same order, as one event at a time: an
/// email to a customer who kept order updates on, none to one who turned
/// them off or is unknown, a webhook call per confirmation.
#[tokio::test]
async fn notifications_of_a_batch_of_orders_are_those_of_one_by_one() {
    use order_api::events::{OrderConfirmed, OrderFailed};
    use user_api::events::UserRegistered;

    let (keen, quiet, unknown) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let registered = |id: Uuid, email: &str, order_updates: bool| {
        envelope(&UserRegistered {
            user_id: user_api::UserId::from(id),
            email: email.to_owned(),
            display_name: email.to_owned(),
            notification_preferences: user_api::NotificationPreferences {
                order_updates,
                product_news: false,
                marketing: false,
            },
            version: Some(1),
        })
    };
    let users = [
        registered(keen, "keen@example.com", true),
        registered(quiet, "quiet@example.com", false),
    ];
    let confirmed = |customer: Uuid| {
        envelope(&OrderConfirmed {
            order_id: kernel::OrderId::from(Uuid::now_v7()),
            customer_id: customer,
            total: kernel::Money::new(1299, kernel::Currency::EUR),
            items: 1,
        })
    };
    let orders = [
        confirmed(keen),
        envelope(&OrderFailed {
            order_id: kernel::OrderId::from(Uuid::now_v7()),
            customer_id: keen,
            reason: "card declined".to_owned(),
        }),
        confirmed(quiet),
        confirmed(unknown),
        confirmed(keen),
    ];

    // One by one.
    let (_one_db, one, one_pool) = notification_scene().await;
    for event in users.iter().chain(&orders) {
        one.dispatch(event, None).await.unwrap();
    }
    // In batches: the users, then the orders.
    let (_batch_db, batched, batch_pool) = notification_scene().await;
    batched
        .dispatch_batch(&users.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    let before = queued(&batch_pool).await.len();
    batched
        .dispatch_batch(&orders.iter().collect::<Vec<_>>())
        .await
        .unwrap();

    let expected = queued(&one_pool).await;
    let emails_to_keen = expected
        .iter()
        .filter(|m| m.2 == "keen@example.com" && m.0 != users[0].id)
        .count();
    assert_eq!(emails_to_keen, 3, "{expected:?}");
    assert!(
        !expected
            .iter()
            .any(|m| m.2 == "quiet@example.com" && m.0 != users[1].id)
    );
    let hooks = expected.iter().filter(|m| m.1 == "webhook").count();
    assert_eq!(hooks, 4, "one per confirmation");
    assert_eq!(queued(&batch_pool).await, expected);

    // The orders' messages and inbox rows were written by one transaction.
    let sql = format!(
        "SELECT count(DISTINCT xmin::text) AS n FROM (SELECT xmin FROM notifications \
         ORDER BY id OFFSET {before}) AS orders"
    );
    assert_eq!(count(&batch_pool, &sql).await, 1, "one transaction");
}

/// User events can arrive out of order (several consumers of one broker
/// queue, a requeued or redriven message): an opt-out that overtakes the
/// registration is kept, an older address or opt-in arriving late changes
/// nothing, and an account nobody saw registered is written to by no one.
#[tokio::test]
async fn recipients_keep_the_newest_of_each_part_whatever_order_it_arrives_in() {
    use order_api::events::OrderConfirmed;
    use user_api::NotificationPreferences;
    use user_api::events::{UserEmailChanged, UserPreferencesChanged, UserRegistered};

    let (_db, dispatcher, pool) = notification_scene().await;
    let user = Uuid::now_v7();
    let deliver = |event: Envelope| {
        let dispatcher = &dispatcher;
        async move { dispatcher.dispatch(&event, None).await.unwrap() }
    };
    let prefs = |order_updates: bool, version: i64| {
        envelope(&UserPreferencesChanged {
            user_id: user_api::UserId::from(user),
            notification_preferences: NotificationPreferences {
                order_updates,
                product_news: false,
                marketing: false,
            },
            version: Some(version),
        })
    };
    let email = |new_email: &str, version: i64| {
        envelope(&UserEmailChanged {
            user_id: user_api::UserId::from(user),
            old_email: "any@example.com".to_owned(),
            new_email: new_email.to_owned(),
            version: Some(version),
        })
    };
    let confirmed = || {
        envelope(&OrderConfirmed {
            order_id: kernel::OrderId::from(Uuid::now_v7()),
            customer_id: user,
            total: kernel::Money::new(1299, kernel::Currency::EUR),
            items: 1,
        })
    };
    let order_emails = || async {
        queued(&pool)
            .await
            .into_iter()
            .filter(|m| m.1 == "email" && m.3.contains("confirmed") && !m.2.is_empty())
            .map(|m| m.2)
            .collect::<Vec<String>>()
    };

    // Version 2 turns order updates off, version 3 changes the address,
    // both delivered before the registration (version 1).
    deliver(prefs(false, 2)).await;
    deliver(email("new@example.com", 3)).await;
    deliver(confirmed()).await;
    assert_eq!(
        order_emails().await,
        Vec::<String>::new(),
        "not registered yet: held, no address"
    );
    deliver(envelope(&UserRegistered {
        user_id: user_api::UserId::from(user),
        email: "first@example.com".to_owned(),
        display_name: "Ada".to_owned(),
        notification_preferences: NotificationPreferences::default(),
        version: Some(1),
    }))
    .await;
    deliver(confirmed()).await;
    assert_eq!(
        order_emails().await,
        Vec::<String>::new(),
        "the opt-out that overtook the registration stands"
    );
    assert!(
        queued(&pool).await.iter().all(|m| !m.2.is_empty()),
        "the update held for the registration is dropped with it: order updates are off"
    );

    // Version 5 turns them on again; version 4 (off) arrives after it.
    deliver(prefs(true, 5)).await;
    deliver(prefs(false, 4)).await;
    deliver(email("older@example.com", 2)).await;
    deliver(confirmed()).await;
    assert_eq!(
        order_emails().await,
        ["new@example.com"],
        "the newest opt-in and address stand"
    );

    // A recipient from before versions (the migration marks its parts 0)
    // who opted out: their registration, from before versions too,
    // redelivered (say, redriven), turns nothing back on.
    let old_user = Uuid::now_v7();
    diesel::sql_query(
        "INSERT INTO recipients (user_id, email, display_name, order_updates, product_news, \
         marketing, registered, email_version, name_version, preferences_version, status_version) \
         VALUES ($1, 'old@example.com', 'Old', false, false, false, true, 0, 0, 0, 0)",
    )
    .bind::<diesel::sql_types::Uuid, _>(old_user)
    .execute(&mut pool.get().await.unwrap())
    .await
    .unwrap();
    deliver(envelope(&UserRegistered {
        user_id: user_api::UserId::from(old_user),
        email: "old@example.com".to_owned(),
        display_name: "Old".to_owned(),
        notification_preferences: NotificationPreferences::default(),
        version: None,
    }))
    .await;
    deliver(envelope(&OrderConfirmed {
        order_id: kernel::OrderId::from(Uuid::now_v7()),
        customer_id: old_user,
        total: kernel::Money::new(100, kernel::Currency::EUR),
        items: 1,
    }))
    .await;
    assert_eq!(order_emails().await, ["new@example.com"], "still opted out");

    // The name and the status follow the same rule.
    let name = |display_name: &str, version: i64| {
        envelope(&user_api::events::UserDisplayNameChanged {
            user_id: user_api::UserId::from(user),
            display_name: display_name.to_owned(),
            version,
        })
    };
    let status = |status: user_api::UserStatus, version: i64| {
        envelope(&user_api::events::UserStatusChanged {
            user_id: user_api::UserId::from(user),
            status,
            version,
        })
    };
    deliver(name("Ada Lovelace", 7)).await;
    deliver(name("Ada Late", 6)).await;
    deliver(status(user_api::UserStatus::Disabled, 9)).await;
    deliver(status(user_api::UserStatus::Active, 8)).await;
    let sql = format!(
        "SELECT count(*) AS n FROM recipients WHERE user_id = '{user}' \
         AND display_name = 'Ada Lovelace' AND NOT active"
    );
    assert_eq!(count(&pool, &sql).await, 1, "the newest name and status");

    // A rename that overtakes the registration stands.
    let renamed = Uuid::now_v7();
    deliver(envelope(&user_api::events::UserDisplayNameChanged {
        user_id: user_api::UserId::from(renamed),
        display_name: "Renamed First".to_owned(),
        version: 2,
    }))
    .await;
    let sql = format!(
        "SELECT count(*) AS n FROM recipients WHERE user_id = '{renamed}' \
         AND display_name = 'Renamed First' AND registered"
    );
    assert_eq!(
        count(&pool, &sql).await,
        0,
        "not a recipient before its registration"
    );
    deliver(envelope(&UserRegistered {
        user_id: user_api::UserId::from(renamed),
        email: "renamed@example.com".to_owned(),
        display_name: "Original".to_owned(),
        notification_preferences: NotificationPreferences::default(),
        version: Some(1),
    }))
    .await;
    assert_eq!(
        count(&pool, &sql).await,
        1,
        "registered, under the newer name"
    );
}

/// Writes `event` into the outbox of `pool`'s schema, as a publisher's
/// transaction would.
async fn write_to_outbox(pool: &db::Pool, event: &Envelope) {
    let mut conn = pool.get().await.unwrap();
    diesel::sql_query(
        "INSERT INTO outbox (id, event_type, aggregate_id, envelope) VALUES ($1, $2, 'a', $3)",
    )
    .bind::<diesel::sql_types::Uuid, _>(event.id)
    .bind::<diesel::sql_types::Text, _>(&event.event_type)
    .bind::<diesel::sql_types::Jsonb, _>(serde_json::to_value(event).unwrap())
    .execute(&mut conn)
    .await
    .unwrap();
}

/// A rolling upgrade of the monolith that adds a handler: while the newer
/// instance runs, the older one's in-process relay stands down, so every
/// event reaches the added handler (the older relay would hand it to its
/// own handlers only and mark it delivered); once the newer instance
/// stops, the older one delivers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_instance_s_relay_stands_down_while_a_newer_one_with_more_handlers_runs() {
    use events::{InProcess, Relay};
    let database = test_database().await;
    let pool = pool(&database, "catalog");
    let recorder = || {
        Arc::new(Recorder {
            handled: Mutex::default(),
            poison: None,
            panic_on: None,
        })
    };
    let (old_first, new_first, new_second) = (recorder(), recorder(), recorder());
    let subscription = |name: &'static str, handler: &Arc<Recorder>| Subscription {
        module: "catalog",
        name,
        event_types: vec!["catalog.wanted.v1"],
        handler: Arc::clone(handler) as Arc<dyn EventHandler>,
        pool: pool.clone(),
    };
    let mut settings = settings();
    settings.poll_interval_ms = 20;
    let older = Arc::new(Dispatcher::new(
        vec![subscription("test.first", &old_first)],
        &settings,
    ));
    let newer = Arc::new(Dispatcher::new(
        vec![
            subscription("test.first", &new_first),
            subscription("test.second", &new_second),
        ],
        &settings,
    ));
    let relay = |dispatcher: &Arc<Dispatcher>| {
        Relay::new(
            "catalog",
            pool.clone(),
            Arc::new(InProcess(Arc::clone(dispatcher))),
            &settings,
        )
        .beside_other_instances(Uuid::now_v7(), dispatcher)
    };
    let (stop_older, older_stopped) = tokio::sync::watch::channel(false);
    let (stop_newer, newer_stopped) = tokio::sync::watch::channel(false);
    let older_relay = tokio::spawn(relay(&older).run(older_stopped));
    let newer_relay = tokio::spawn(relay(&newer).run(newer_stopped));
    let beats = "SELECT count(*) AS n FROM relay_heartbeats";
    crate::helpers::eventually("both relays beating", || async {
        (count(&pool, beats).await == 2).then_some(())
    })
    .await;

    let pending = "SELECT count(*) AS n FROM outbox WHERE delivered_at IS NULL";
    // One at a time, so that both relays have their rounds.
    let mut written = Vec::new();
    for _ in 0..10 {
        let event = event("catalog.wanted.v1");
        written.push(event.id);
        write_to_outbox(&pool, &event).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    crate::helpers::eventually("every event delivered", || async {
        (count(&pool, pending).await == 0).then_some(())
    })
    .await;
    let ids = |recorder: &Recorder| -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = recorder
            .handled
            .lock()
            .unwrap()
            .iter()
            .map(|h| h.0)
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(&new_second),
        written,
        "the added handler saw every event"
    );
    assert_eq!(ids(&new_first), written);
    assert_eq!(
        ids(&old_first),
        Vec::<Uuid>::new(),
        "the older relay stood down"
    );

    // The newer instance stops (its heartbeat goes with it): the older
    // delivers again at once.
    stop_newer.send(true).unwrap();
    newer_relay.await.unwrap();
    assert_eq!(count(&pool, beats).await, 1);
    let last = event("catalog.wanted.v1");
    let last_id = last.id;
    write_to_outbox(&pool, &last).await;
    crate::helpers::eventually("the older relay delivering again", || async {
        (ids(&old_first) == [last_id]).then_some(())
    })
    .await;
    stop_older.send(true).unwrap();
    older_relay.await.unwrap();
    assert_eq!(
        count(&pool, beats).await,
        0,
        "a clean stop deletes its heartbeat"
    );
}

/// Fails, as the database's trouble (transient), every time it meets one
/// event; records the others.
struct Stubborn {
    fails_on: Uuid,
    handled: Mutex<Vec<Uuid>>,
}

#[async_trait::async_trait]
impl EventHandler for Stubborn {
    async fn handle(
        &self,
        _conn: &mut AsyncPgConnection,
        event: &Envelope,
    ) -> Result<(), HandlerError> {
        if event.id == self.fails_on {
            return Err(HandlerError::transient("the database cannot answer now"));
        }
        self.handled.lock().unwrap().push(event.id);
        Ok(())
    }
}

/// One subscription of an in-process batch meets an event it cannot take
/// for now (the database's trouble, retried later): the events before it
/// are delivered, the error is recorded on that event (not on the batch's
/// first), and the other subscriptions take the whole batch meanwhile,
/// held up by nothing of the first's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_stuck_on_one_event_holds_up_only_that_event_and_what_follows_it() {
    use events::{InProcess, Relay};
    let database = test_database().await;
    let pool = pool(&database, "catalog");
    let events: Vec<Envelope> = (0..4).map(|_| event("catalog.wanted.v1")).collect();
    let stuck = Arc::new(Stubborn {
        fails_on: events[2].id,
        handled: Mutex::default(),
    });
    let other = Arc::new(Stubborn {
        fails_on: Uuid::nil(),
        handled: Mutex::default(),
    });
    let mut settings = settings();
    settings.poll_interval_ms = 20;
    settings.max_attempts = 2;
    let subscription = |name: &'static str, handler: &Arc<Stubborn>| Subscription {
        module: "catalog",
        name,
        event_types: vec!["catalog.wanted.v1"],
        handler: Arc::clone(handler) as Arc<dyn EventHandler>,
        pool: pool.clone(),
    };
    let dispatcher = Arc::new(Dispatcher::new(
        vec![
            subscription("test.stuck", &stuck),
            subscription("test.other", &other),
        ],
        &settings,
    ));
    for event in &events {
        write_to_outbox(&pool, event).await;
    }
    let relay = Relay::new(
        "catalog",
        pool.clone(),
        Arc::new(InProcess(Arc::clone(&dispatcher))),
        &settings,
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(relay.run(stopped));
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    crate::helpers::eventually("the other subscription took the whole batch", || async {
        (*other.handled.lock().unwrap() == ids).then_some(())
    })
    .await;
    let failed = format!(
        "SELECT count(*) AS n FROM outbox WHERE id = '{}' AND last_error IS NOT NULL",
        ids[2]
    );
    crate::helpers::eventually("the error recorded on the stuck event", || async {
        (count(&pool, &failed).await == 1).then_some(())
    })
    .await;
    stop.send(true).unwrap();
    running.await.unwrap();
    let delivered: Vec<Uuid> = {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Uuid)]
            id: Uuid,
        }
        let mut conn = pool.get().await.unwrap();
        let rows: Vec<Row> =
            diesel::sql_query("SELECT id FROM outbox WHERE delivered_at IS NOT NULL ORDER BY seq")
                .load(&mut conn)
                .await
                .unwrap();
        rows.into_iter().map(|r| r.id).collect()
    };
    assert_eq!(delivered, ids[..2], "the events before the stuck one");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) AS n FROM outbox WHERE last_error IS NOT NULL"
        )
        .await,
        1,
        "the error on the stuck event alone"
    );
    // The stuck subscription's events never overtake the one it is stuck
    // on (it took the first two, perhaps twice: a batch rolled back).
    let took = stuck.handled.lock().unwrap().clone();
    assert!(ids[..2].iter().all(|id| took.contains(id)), "{took:?}");
    assert!(!took.contains(&ids[3]), "overtaken: {took:?}");
}

/// An older instance whose heartbeat fails once (a pool's wait, a reset
/// connection) still stands down while a newer instance with more
/// handlers is live: the failure of its own beat says nothing about the
/// others', and for a beat it would hand their events to its own handlers
/// only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_relay_whose_heartbeat_fails_still_stands_down() {
    use events::{InProcess, Relay};
    let database = test_database().await;
    let pool = pool(&database, "catalog");
    let recorder = Arc::new(Recorder {
        handled: Mutex::default(),
        poison: None,
        panic_on: None,
    });
    let mut settings = settings();
    settings.poll_interval_ms = 20;
    let older = Arc::new(Dispatcher::new(
        vec![Subscription {
            module: "catalog",
            name: "test.first",
            event_types: vec!["catalog.wanted.v1"],
            handler: Arc::clone(&recorder) as Arc<dyn EventHandler>,
            pool: pool.clone(),
        }],
        &settings,
    ));
    let instance = Uuid::now_v7();
    let relay = Relay::new(
        "catalog",
        pool.clone(),
        Arc::new(InProcess(Arc::clone(&older))),
        &settings,
    )
    .beside_other_instances(instance, &older);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(relay.run(stopped));
    let beats = "SELECT count(*) AS n FROM relay_heartbeats";
    crate::helpers::eventually("the older relay beating", || async {
        (count(&pool, beats).await == 1).then_some(())
    })
    .await;
    // A newer instance, live for an hour, hands the events to one handler
    // more; and from now on the older one's beats fail (each refusal
    // counted by a sequence, which no rollback takes back).
    let mut conn = pool.get().await.unwrap();
    diesel::sql_query(
        "INSERT INTO relay_heartbeats (instance_id, audience, live_until) \
         VALUES (gen_random_uuid(), \
                 ARRAY['test.first|catalog.wanted.v1', 'test.second|catalog.wanted.v1'], \
                 now() + interval '1 hour')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    diesel_async::SimpleAsyncConnection::batch_execute(
        &mut *conn,
        &format!(
            "CREATE SEQUENCE beats_refused; \
         CREATE FUNCTION refuse_beat() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM nextval('beats_refused'); RAISE EXCEPTION 'beat refused'; END $$; \
         CREATE TRIGGER refuse_beat BEFORE INSERT OR UPDATE ON relay_heartbeats \
         FOR EACH ROW WHEN (NEW.instance_id = '{instance}') EXECUTE FUNCTION refuse_beat();"
        ),
    )
    .await
    .unwrap();
    drop(conn);
    let event = event("catalog.wanted.v1");
    write_to_outbox(&pool, &event).await;
    let refused = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS n FROM beats_refused";
    crate::helpers::eventually("a beat of the older relay refused", || async {
        (count(&pool, refused).await >= 1).then_some(())
    })
    .await;
    // Many rounds of the older relay after its failed beat.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pending = "SELECT count(*) AS n FROM outbox WHERE delivered_at IS NULL";
    assert_eq!(
        count(&pool, pending).await,
        1,
        "the event waits for the newer instance's relay"
    );
    assert!(
        recorder.handled.lock().unwrap().is_empty(),
        "the older relay stood down"
    );
    stop.send(true).unwrap();
    running.await.unwrap();
}

/// A newer instance's batch that outlasts a heartbeat writes its heartbeat
/// again before it commits: while it ran, its lock held the older relays
/// off, and when the lock goes they must still find it live (else one
/// would take the next events, for its own handlers only, before the newer
/// relay's loop beats again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_outlasts_a_heartbeat_beats_again_before_it_commits() {
    use events::{InProcess, Relay};
    let database = test_database().await;
    let pool = pool(&database, "catalog");
    let recorder = Arc::new(Recorder {
        handled: Mutex::default(),
        poison: None,
        panic_on: None,
    });
    let mut settings = settings();
    // Longer than a beat (5 s); the loop's next beat is a poll away after.
    settings.pause_in_handler_ms = 6_000;
    settings.poll_interval_ms = 3_000;
    let dispatcher = Arc::new(Dispatcher::new(
        vec![Subscription {
            module: "catalog",
            name: "test.slow",
            event_types: vec!["catalog.wanted.v1"],
            handler: Arc::clone(&recorder) as Arc<dyn EventHandler>,
            pool: pool.clone(),
        }],
        &settings,
    ));
    let event = event("catalog.wanted.v1");
    write_to_outbox(&pool, &event).await;
    let relay = Relay::new(
        "catalog",
        pool.clone(),
        Arc::new(InProcess(Arc::clone(&dispatcher))),
        &settings,
    )
    .beside_other_instances(Uuid::now_v7(), &dispatcher);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(relay.run(stopped));
    // The relay and its handler hold both of its pool's connections.
    let reads = self::pool(&database, "catalog");
    let delivered = "SELECT count(*) AS n FROM outbox WHERE delivered_at IS NOT NULL";
    crate::helpers::eventually("the slow batch committed", || async {
        (count(&reads, delivered).await == 1).then_some(())
    })
    .await;
    // Live for 15 s from the beat before the batch; written again at its
    // end (6 s in), live for 15 s from there.
    let lead =
        "SELECT extract(epoch FROM live_until - started_at)::bigint AS n FROM relay_heartbeats";
    let lead = count(&reads, lead).await;
    assert!(
        lead >= 19,
        "live {lead} s past the first beat: not written again at the batch's end"
    );
    stop.send(true).unwrap();
    running.await.unwrap();
}

/// A database whose migrations have not run yet (the shop started with
/// `database.migrate_on_start` off, before the migration job) has no
/// `relay_heartbeats`: the in-process relay still delivers, as it did
/// before heartbeats, without standing down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_without_its_heartbeat_table_still_delivers() {
    use events::{InProcess, Relay};
    let (_database, dispatcher, recorder, pool) = scene(None).await;
    let mut conn = pool.get().await.unwrap();
    diesel::sql_query("DROP TABLE relay_heartbeats")
        .execute(&mut conn)
        .await
        .unwrap();
    let event = event("test.wanted.v1");
    drop(conn);
    write_to_outbox(&pool, &event).await;
    let dispatcher = Arc::new(dispatcher);
    let mut settings = settings();
    settings.poll_interval_ms = 20;
    let relay = Relay::new(
        "test",
        pool.clone(),
        Arc::new(InProcess(Arc::clone(&dispatcher))),
        &settings,
    )
    .beside_other_instances(Uuid::now_v7(), &dispatcher);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(relay.run(stopped));
    let handled = event.id;
    crate::helpers::eventually("the event delivered", || async {
        recorder
            .handled
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.0 == handled)
            .then_some(())
    })
    .await;
    stop.send(true).unwrap();
    running.await.unwrap();
}
