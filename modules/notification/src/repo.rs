//! The SQL of the module's routes: the notifications a caller may read and
//! the webhook subscriptions. (The event handlers' and the sender's
//! statements still sit beside their code, in `handler.rs` and `sender.rs`.)
//! Raw SQL through `db::sql` (prepared once per connection): the module
//! has no diesel `table!` definitions yet.

use diesel::QueryResult;
use diesel::sql_types::{Array, BigInt, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};
use uuid::Uuid;

use crate::http::{Notification, Webhook};

/// Up to `limit` notifications older than `before` (ids are time-ordered),
/// newest first; only `owner`'s when given.
pub(crate) async fn notifications(
    conn: &mut AsyncPgConnection,
    owner: Option<Uuid>,
    before: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<Notification>> {
    db::sql(
        "SELECT id, event_type, recipient_user_id, channel, destination, subject, status, attempts, last_error, created_at, sent_at \
         FROM notifications WHERE ($1::uuid IS NULL OR recipient_user_id = $1) AND ($2::uuid IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3",
    )
    .bind::<Nullable<SqlUuid>, _>(owner)
    .bind::<Nullable<SqlUuid>, _>(before)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

/// Stores a new subscription and returns it (without its secret).
pub(crate) async fn insert_webhook(
    conn: &mut AsyncPgConnection,
    url: &str,
    secret: &str,
    event_types: &[String],
) -> QueryResult<Webhook> {
    db::sql(
        "INSERT INTO webhook_subscriptions (id, url, secret, event_types) VALUES ($1, $2, $3, $4) \
         RETURNING id, url, event_types, created_at",
    )
    .bind::<SqlUuid, _>(Uuid::now_v7())
    .bind::<Text, _>(url)
    .bind::<Text, _>(secret)
    .bind::<Array<Text>, _>(event_types)
    .get_result(conn)
    .await
}

/// Every subscription, oldest first.
pub(crate) async fn webhooks(conn: &mut AsyncPgConnection) -> QueryResult<Vec<Webhook>> {
    db::sql("SELECT id, url, event_types, created_at FROM webhook_subscriptions ORDER BY id")
        .load(conn)
        .await
}

/// Removes a subscription; how many rows went (0 or 1).
pub(crate) async fn delete_webhook(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<usize> {
    db::sql("DELETE FROM webhook_subscriptions WHERE id = $1")
        .bind::<SqlUuid, _>(id)
        .execute(conn)
        .await
}
