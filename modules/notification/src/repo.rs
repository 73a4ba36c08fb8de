//! All of the module's SQL: the routes' (the notifications a caller may
//! read, the webhook subscriptions), the event handler's (the `recipients`
//! read model, queued messages) and the sender's (claiming due messages,
//! recording outcomes). Raw SQL through `db::sql` (prepared once per
//! connection): the module has no diesel `table!` definitions yet.

use diesel::QueryResult;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};
use kernel::Envelope;
use user_api::NotificationPreferences;
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

/// Creates or refreshes a user's row of the `recipients` read model.
pub(crate) async fn upsert_recipient(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    email: &str,
    display_name: &str,
    p: NotificationPreferences,
) -> QueryResult<usize> {
    db::sql(
        "INSERT INTO recipients (user_id, email, display_name, order_updates, product_news, marketing) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id) DO UPDATE SET email = EXCLUDED.email, \
         display_name = EXCLUDED.display_name, updated_at = now()",
    )
    .bind::<SqlUuid, _>(user_id)
    .bind::<Text, _>(email)
    .bind::<Text, _>(display_name)
    .bind::<Bool, _>(p.order_updates)
    .bind::<Bool, _>(p.product_news)
    .bind::<Bool, _>(p.marketing)
    .execute(conn)
    .await
}

/// A recipient's new address.
pub(crate) async fn set_recipient_email(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    email: &str,
) -> QueryResult<usize> {
    db::sql("UPDATE recipients SET email = $2, updated_at = now() WHERE user_id = $1")
        .bind::<SqlUuid, _>(user_id)
        .bind::<Text, _>(email)
        .execute(conn)
        .await
}

/// A recipient's new opt-ins.
pub(crate) async fn set_recipient_preferences(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    p: NotificationPreferences,
) -> QueryResult<usize> {
    db::sql(
        "UPDATE recipients SET order_updates = $2, product_news = $3, marketing = $4, updated_at = now() \
         WHERE user_id = $1",
    )
    .bind::<SqlUuid, _>(user_id)
    .bind::<Bool, _>(p.order_updates)
    .bind::<Bool, _>(p.product_news)
    .bind::<Bool, _>(p.marketing)
    .execute(conn)
    .await
}

/// Someone to write to.
#[derive(diesel::QueryableByName)]
pub(crate) struct Recipient {
    #[diesel(sql_type = SqlUuid)]
    pub(crate) user_id: Uuid,
    #[diesel(sql_type = Text)]
    pub(crate) email: String,
    #[diesel(sql_type = Text)]
    pub(crate) display_name: String,
}

/// Everyone who opted into product news.
pub(crate) async fn product_news_recipients(
    conn: &mut AsyncPgConnection,
) -> QueryResult<Vec<Recipient>> {
    db::sql("SELECT user_id, email, display_name FROM recipients WHERE product_news")
        .load(conn)
        .await
}

/// The customer, if known and still opted into order updates (zero or one row).
pub(crate) async fn order_update_recipient(
    conn: &mut AsyncPgConnection,
    customer: Uuid,
) -> QueryResult<Vec<Recipient>> {
    db::sql(
        "SELECT user_id, email, display_name FROM recipients WHERE user_id = $1 AND order_updates",
    )
    .bind::<SqlUuid, _>(customer)
    .load(conn)
    .await
}

/// A webhook subscription as the handler needs it.
#[derive(diesel::QueryableByName)]
pub(crate) struct Subscription {
    #[diesel(sql_type = SqlUuid)]
    pub(crate) id: Uuid,
    #[diesel(sql_type = Text)]
    pub(crate) url: String,
}

/// The subscriptions to `event_type`.
pub(crate) async fn subscriptions_to(
    conn: &mut AsyncPgConnection,
    event_type: &str,
) -> QueryResult<Vec<Subscription>> {
    db::sql("SELECT id, url FROM webhook_subscriptions WHERE $1 = ANY (event_types)")
        .bind::<Text, _>(event_type)
        .load(conn)
        .await
}

/// A message to queue for the sender.
pub(crate) struct Queued<'a> {
    /// The event that causes it.
    pub(crate) event: &'a Envelope,
    /// The account it is for, if any.
    pub(crate) recipient: Option<Uuid>,
    /// `email` or `webhook`.
    pub(crate) channel: &'static str,
    /// The address or URL.
    pub(crate) destination: &'a str,
    /// The webhook subscription it serves, if any.
    pub(crate) subscription: Option<Uuid>,
    pub(crate) subject: &'a str,
    pub(crate) body: &'a str,
}

/// Queues a message, once per event, channel and destination (a redelivered
/// event queues nothing new: `notifications_once`).
pub(crate) async fn queue(conn: &mut AsyncPgConnection, m: &Queued<'_>) -> QueryResult<usize> {
    db::sql(
        "INSERT INTO notifications \
         (id, event_id, event_type, request_id, recipient_user_id, channel, destination, subscription_id, subject, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT ON CONSTRAINT notifications_once DO NOTHING",
    )
    .bind::<SqlUuid, _>(Uuid::now_v7())
    .bind::<SqlUuid, _>(m.event.id)
    .bind::<Text, _>(&m.event.event_type)
    .bind::<Nullable<Text>, _>(m.event.request_id.as_deref())
    .bind::<Nullable<SqlUuid>, _>(m.recipient)
    .bind::<Text, _>(m.channel)
    .bind::<Text, _>(m.destination)
    .bind::<Nullable<SqlUuid>, _>(m.subscription)
    .bind::<Text, _>(m.subject)
    .bind::<Text, _>(m.body)
    .execute(conn)
    .await
}

/// A queued message the sender has claimed.
#[derive(diesel::QueryableByName)]
pub(crate) struct Due {
    #[diesel(sql_type = SqlUuid)]
    pub(crate) id: Uuid,
    #[diesel(sql_type = Text)]
    pub(crate) event_type: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) request_id: Option<String>,
    #[diesel(sql_type = Text)]
    pub(crate) channel: String,
    #[diesel(sql_type = Text)]
    pub(crate) destination: String,
    #[diesel(sql_type = Text)]
    pub(crate) subject: String,
    #[diesel(sql_type = Text)]
    pub(crate) body: String,
    #[diesel(sql_type = Integer)]
    pub(crate) attempts: i32,
    /// The webhook subscription's signing key (webhooks only).
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) secret: Option<String>,
}

/// Claims up to `limit` messages due now, oldest first, locked for this
/// transaction; rows another sender holds are skipped (several instances).
pub(crate) async fn claim_due(conn: &mut AsyncPgConnection, limit: i64) -> QueryResult<Vec<Due>> {
    db::sql(
        "SELECT n.id, n.event_type, n.request_id, n.channel, n.destination, n.subject, n.body, n.attempts, w.secret \
         FROM notifications n LEFT JOIN webhook_subscriptions w ON w.id = n.subscription_id \
         WHERE n.status = 'pending' AND n.next_attempt_at <= now() \
         ORDER BY n.created_at LIMIT $1 FOR UPDATE OF n SKIP LOCKED",
    )
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

/// Puts a message off for `wait_ms` without spending an attempt (an open
/// breaker).
pub(crate) async fn defer(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    reason: &str,
    wait_ms: i64,
) -> QueryResult<usize> {
    db::sql(
        "UPDATE notifications SET last_error = $2, \
         next_attempt_at = now() + make_interval(secs => $3::float8 / 1000) WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(reason)
    .bind::<BigInt, _>(wait_ms)
    .execute(conn)
    .await
}

/// Records a delivery.
pub(crate) async fn mark_sent(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    attempts: i32,
) -> QueryResult<usize> {
    db::sql(
        "UPDATE notifications SET status = 'sent', sent_at = now(), attempts = $2, last_error = NULL WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Integer, _>(attempts)
    .execute(conn)
    .await
}

/// Records a failed attempt: retried in `retry_in_ms`, or failed for good
/// when `give_up`.
pub(crate) async fn mark_not_sent(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    attempts: i32,
    error: &str,
    give_up: bool,
    retry_in_ms: i64,
) -> QueryResult<usize> {
    db::sql(
        "UPDATE notifications SET attempts = $2, last_error = $3, \
         status = CASE WHEN $4 THEN 'failed' ELSE 'pending' END, \
         next_attempt_at = now() + make_interval(secs => $5::float8 / 1000) WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Integer, _>(attempts)
    .bind::<Text, _>(error)
    .bind::<Bool, _>(give_up)
    .bind::<BigInt, _>(retry_in_ms)
    .execute(conn)
    .await
}
