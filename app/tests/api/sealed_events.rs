//! Events on the broker are authenticated (ADR 0018): a message that does
//! not carry the deployment's signature of its exact bytes is refused,
//! however well-formed; the shop's own events are handled as before.

use diesel_async::{AsyncConnection as _, RunQueryDsl as _};
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{eventually, free_port, http};
use crate::journey::{live, start, url};
use crate::saga_crash::Deployment;

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

async fn handled(deployment: &Deployment, event: Uuid) -> i64 {
    let mut conn = diesel_async::AsyncPgConnection::establish(deployment.db.url())
        .await
        .unwrap();
    db::sql("SELECT count(*) AS n FROM notification.inbox WHERE event_id = $1")
        .bind::<diesel::sql_types::Uuid, _>(event)
        .get_result::<Count>(&mut conn)
        .await
        .unwrap()
        .n
}

/// Registrations the shop itself published that its notification module handled.
async fn registrations_handled(deployment: &Deployment) -> i64 {
    let mut conn = diesel_async::AsyncPgConnection::establish(deployment.db.url())
        .await
        .unwrap();
    db::sql(
        "SELECT count(*) AS n FROM notification.inbox i \
         JOIN users.outbox o ON o.id = i.event_id WHERE o.event_type = 'user.registered.v1'",
    )
    .get_result::<Count>(&mut conn)
    .await
    .unwrap()
    .n
}

#[tokio::test]
async fn a_forged_event_on_the_broker_is_refused_and_the_shops_own_are_handled() {
    let deployment = Deployment::new().await;
    let port = free_port();
    let shop = start(&deployment, port, true, &[], &[]);
    live(std::slice::from_ref(&shop)).await;

    // Someone who reached the broker publishes a well-formed registration
    // that would redirect an existing customer's emails: once unsigned,
    // once signed with a key of their own.
    let victim = Uuid::now_v7();
    let forged = |id: Uuid| {
        serde_json::to_vec(&json!({
            "id": id, "type": "user.registered.v1", "source": "user",
            "aggregate_id": victim.to_string(), "occurred_at": "2026-12-01T00:00:00Z",
            "request_id": null, "causation_id": null,
            "payload": {"user_id": victim, "email": "attacker@evil.example", "display_name": "x",
                        "notification_preferences": {"order_updates": true, "product_news": true, "marketing": true}}
        }))
        .unwrap()
    };
    let (unsigned, foreign) = (Uuid::now_v7(), Uuid::now_v7());
    let (other_key, _) = auth::SigningKey::generate();
    let other_seal = auth::EventSeal::new(&other_key).unwrap();
    let connection = Connection::connect(
        &deployment.settings.events.rabbitmq.url,
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let exchange = format!("{}.events", deployment.namespace());
    for (id, signature) in [
        (unsigned, None),
        (foreign, Some(other_seal.sign(&forged(foreign)).unwrap())),
    ] {
        let mut headers = FieldTable::default();
        if let Some(signature) = signature {
            headers.insert(
                "x-shop-signature".into(),
                AMQPValue::LongString(signature.as_str().into()),
            );
        }
        channel
            .basic_publish(
                exchange.as_str().into(),
                "user.registered.v1".into(),
                BasicPublishOptions::default(),
                &forged(id),
                BasicProperties::default().with_headers(headers),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    // The shop's own registration, published after them, is handled.
    let registered = http()
        .post(format!("{}/api/v1/users", url(port)))
        .json(
            &json!({"email": format!("real-{}@example.com", Uuid::new_v4().simple()),
                      "password": "a genuine long password", "display_name": "Real"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    eventually("both forgeries are refused", || async {
        (shop
            .logs()
            .matches("event without a valid signature")
            .count()
            == 2)
            .then_some(())
    })
    .await;
    eventually("the genuine registration is handled", || async {
        (registrations_handled(&deployment).await == 1).then_some(())
    })
    .await;
    assert_eq!(handled(&deployment, unsigned).await, 0);
    assert_eq!(handled(&deployment, foreign).await, 0);
}
