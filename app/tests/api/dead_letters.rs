//! Dead letters: a poison event is set aside without blocking the outbox, and redriven.

use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use kernel::Role;
use serde_json::{Value, json};

use crate::helpers::{
    assert_problem, eventually, get_as, get_json, notifications, post_as, spawn_app_with,
    undelivered,
};

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
        let page: Value =
            get_json(&app.client, app.url("/api/v1/admin/dead-letters"), &admin).await;
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
    assert_eq!(undelivered(&app).await, 0);
    let metrics = app.metrics().await;
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

    // Offered again while it stays refused (an ack lost, a later event of
    // its batch failing for now): still one open dead letter, not a copy
    // per offer.
    diesel::sql_query("UPDATE catalog.outbox SET delivered_at = NULL WHERE id = $1::uuid")
        .bind::<Text, _>(envelope["id"].as_str().unwrap())
        .execute(&mut app.db().await)
        .await
        .unwrap();
    eventually("the event refused again", || async {
        app.metrics()
            .await
            .contains(
                r#"events_handled_total{handler="notification.notify",outcome="dead_lettered"} 2"#,
            )
            .then_some(())
    })
    .await;
    let open = crate::helpers::count(
        &app,
        "SELECT count(*) AS n FROM notification.dead_letters WHERE redriven_at IS NULL",
    )
    .await;
    assert_eq!(open, 1, "one open dead letter per event and handler");

    let customer = get_as(
        &app.client,
        app.url("/api/v1/admin/dead-letters"),
        app.token(&[Role::Customer]),
    )
    .await;
    assert_problem(customer, 403, "forbidden").await;

    // Redriving a still-broken event fails and says why; fixing the data lets it through.
    let id = dead["id"].as_str().unwrap();
    let redrive = |path: String| post_as(&app.client, path, &admin);
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

/// A dead-lettered event offered again and handled this time (an ack
/// lost, a publisher's retry, its outbox row offered again once its data
/// was mended) closes its dead letter: nothing is left for an operator to
/// redrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_handled_after_it_was_dead_lettered_closes_its_dead_letter() {
    let app = spawn_app_with(&[
        ("APP__EVENTS__MAX_ATTEMPTS", "2"),
        ("APP__EVENTS__RETRY_BASE_MS", "10"),
    ])
    .await;
    let id = uuid::Uuid::now_v7();
    let envelope = json!({
        "id": id, "type": "catalog.product_created.v1", "source": "catalog",
        "aggregate_id": "x", "occurred_at": chrono::Utc::now(), "request_id": "poison-2",
        "causation_id": null, "payload": {"not": "a product"}
    });
    diesel::sql_query("INSERT INTO catalog.outbox (id, event_type, aggregate_id, envelope) VALUES ($1, 'catalog.product_created.v1', 'x', $2)")
        .bind::<diesel::sql_types::Uuid, _>(id)
        .bind::<diesel::sql_types::Jsonb, _>(&envelope)
        .execute(&mut app.db().await)
        .await
        .unwrap();
    let open = "SELECT count(*) AS n FROM notification.dead_letters WHERE redriven_at IS NULL";
    eventually("the dead letter", || async {
        (crate::helpers::count(&app, open).await == 1).then_some(())
    })
    .await;
    let product = json!({"product_id": uuid::Uuid::now_v7(), "sku": "MENDED-1", "name": "Mended", "price": {"amount_minor": 1, "currency": "EUR"}, "active": true});
    diesel::sql_query(
        "UPDATE catalog.outbox SET envelope = jsonb_set(envelope, '{payload}', $1), \
         delivered_at = NULL WHERE id = $2",
    )
    .bind::<diesel::sql_types::Jsonb, _>(&product)
    .bind::<diesel::sql_types::Uuid, _>(id)
    .execute(&mut app.db().await)
    .await
    .unwrap();
    eventually("the mended event handled", || async {
        notifications(&app)
            .await
            .into_iter()
            .find(|n| n.subject.contains("MENDED-1"))
    })
    .await;
    assert_eq!(
        crate::helpers::count(&app, open).await,
        0,
        "closed with the handling"
    );
    let admin = app.token(&[Role::Admin]);
    let page: Value = get_json(&app.client, app.url("/api/v1/admin/dead-letters"), &admin).await;
    assert_eq!(page["items"], json!([]), "{page}");
}

/// Old rows are pruned: redriven dead letters once past
/// `events.retention_hours` (open ones stay until an operator acts), and
/// sent or failed notifications, bodies included, once past
/// `notification.retention_days` (pending ones stay until settled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_history_is_pruned_and_open_work_stays() {
    let app = spawn_app_with(&[
        ("APP__EVENTS__RETENTION_HOURS", "1"),
        ("APP__EVENTS__PRUNE_INTERVAL_SECS", "1"),
        ("APP__NOTIFICATION__RETENTION_DAYS", "1"),
        ("APP__NOTIFICATION__PRUNE_INTERVAL_SECS", "1"),
    ])
    .await;
    let count = |sql: &'static str| crate::helpers::count(&app, sql);
    diesel::sql_query(
        "INSERT INTO catalog.dead_letters \
         (id, handler, event_id, event_type, envelope, attempts, last_error, created_at, redriven_at) \
         VALUES (gen_random_uuid(), 'old', gen_random_uuid(), 't', '{}', 1, 'e', \
                 now() - interval '3 days', now() - interval '2 days'), \
                (gen_random_uuid(), 'open', gen_random_uuid(), 't', '{}', 1, 'e', \
                 now() - interval '3 days', NULL)",
    )
    .execute(&mut app.db().await)
    .await
    .unwrap();
    // Two notifications of a registration (a welcome and an admin's), sent.
    app.register("old@example.com", crate::helpers::PASSWORD)
        .await;
    eventually("the welcome mail sent", || async {
        (count("SELECT count(*) AS n FROM notification.notifications WHERE status = 'sent'").await
            > 0)
        .then_some(())
    })
    .await;
    diesel::sql_query(
        "UPDATE notification.notifications SET created_at = now() - interval '2 days'",
    )
    .execute(&mut app.db().await)
    .await
    .unwrap();
    diesel::sql_query(
        "INSERT INTO notification.notifications \
         (id, event_id, event_type, channel, destination, subject, body, created_at, next_attempt_at) \
         VALUES (gen_random_uuid(), gen_random_uuid(), 'user.registered.v1', 'email', \
                 'later@example.com', 's', 'b', now() - interval '2 days', now() + interval '1 day')",
    )
    .execute(&mut app.db().await)
    .await
    .unwrap();
    // An order update held as long for a customer who never registered.
    diesel::sql_query(
        "INSERT INTO notification.notifications \
         (id, event_id, event_type, recipient_user_id, channel, destination, subject, body, \
          status, created_at) \
         VALUES (gen_random_uuid(), gen_random_uuid(), 'order.confirmed.v1', gen_random_uuid(), \
                 'email', '', 'order.confirmed.v1', '{}', 'held', now() - interval '2 days')",
    )
    .execute(&mut app.db().await)
    .await
    .unwrap();
    eventually("old history pruned", || async {
        let dead =
            count("SELECT count(*) AS n FROM catalog.dead_letters WHERE handler = 'old'").await;
        let settled =
            count("SELECT count(*) AS n FROM notification.notifications WHERE status <> 'pending'")
                .await;
        (dead == 0 && settled == 0).then_some(())
    })
    .await;
    assert_eq!(
        count("SELECT count(*) AS n FROM catalog.dead_letters WHERE handler = 'open'").await,
        1
    );
    assert_eq!(
        count("SELECT count(*) AS n FROM notification.notifications WHERE status = 'pending'")
            .await,
        1
    );
}
