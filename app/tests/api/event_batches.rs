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
