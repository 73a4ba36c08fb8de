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
/// handled it; refuses `poison`.
struct Recorder {
    handled: Mutex<Vec<(Uuid, i64)>>,
    poison: Option<Uuid>,
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
            return Err(HandlerError("this one always fails".to_owned()));
        }
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

/// A dispatcher with one subscription (to `test.wanted.v1`) in the
/// catalog's schema of a fresh database.
async fn scene(
    poison: Option<Uuid>,
) -> (testkit::TestDatabase, Dispatcher, Arc<Recorder>, db::Pool) {
    let database = test_database().await;
    let pool = db::build_pool(&db::PoolOptions {
        url: database.url().to_owned(),
        schema: "catalog",
        max_size: 2,
        runtimes: 1,
        acquire_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
    })
    .unwrap();
    let recorder = Arc::new(Recorder {
        handled: Mutex::default(),
        poison,
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
    let change = inventory_api::events::StockChanged {
        sku: catalog_api::Sku::parse(sku).unwrap(),
        on_hand: available,
        reserved: 0,
        available,
        low_stock_threshold: Some(threshold),
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
        };
        pushed.push(batch.push(&change).unwrap());
    }
    batch.write(&mut conn).await.unwrap();

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
