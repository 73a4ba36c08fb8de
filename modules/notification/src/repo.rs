//! All of the module's SQL: the routes' (the notifications a caller may
//! read, the webhook subscriptions), the event handler's (the `recipients`
//! read model, queued messages) and the sender's (claiming due messages,
//! recording outcomes). Diesel's query builder, but for the queued
//! messages' insert, the sender's claim and its two retry schedulings, raw
//! SQL through `db::sql` (prepared once per connection; their reasons are
//! beside them).

use chrono::{DateTime, Utc};
use diesel::dsl::now;
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Bool, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use kernel::Envelope;
use user_api::NotificationPreferences;
use uuid::Uuid;

use crate::http::{Notification, Webhook};

diesel::table! {
    notification.recipients (user_id) {
        user_id -> Uuid,
        email -> Nullable<Text>,
        display_name -> Nullable<Text>,
        order_updates -> Bool,
        product_news -> Bool,
        marketing -> Bool,
        updated_at -> Timestamptz,
        registered -> Bool,
        active -> Bool,
        email_version -> Nullable<BigInt>,
        name_version -> Nullable<BigInt>,
        preferences_version -> Nullable<BigInt>,
        status_version -> Nullable<BigInt>,
    }
}

diesel::table! {
    notification.webhook_subscriptions (id) {
        id -> Uuid,
        url -> Text,
        secret -> Text,
        event_types -> Array<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    notification.notifications (id) {
        id -> Uuid,
        event_id -> Uuid,
        event_type -> Text,
        request_id -> Nullable<Text>,
        recipient_user_id -> Nullable<Uuid>,
        channel -> Text,
        destination -> Text,
        subscription_id -> Nullable<Uuid>,
        subject -> Text,
        body -> Text,
        status -> Text,
        attempts -> Integer,
        last_error -> Nullable<Text>,
        next_attempt_at -> Timestamptz,
        created_at -> Timestamptz,
        sent_at -> Nullable<Timestamptz>,
    }
}

use notifications as n;
use recipients as r;
use webhook_subscriptions as w;

/// Up to `limit` notifications older than `before` (ids are time-ordered),
/// newest first; only `owner`'s when given.
pub(crate) async fn notifications(
    conn: &mut AsyncPgConnection,
    owner: Option<Uuid>,
    before: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<Notification>> {
    let mut query = n::table
        .select(Notification::as_select())
        .order(n::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(owner) = owner {
        query = query.filter(n::recipient_user_id.eq(owner));
    }
    if let Some(before) = before {
        query = query.filter(n::id.lt(before));
    }
    query.load(conn).await
}

/// Stores a new subscription and returns it (without its secret).
/// `None` when `limit` subscriptions exist already. Creations take turns
/// (an advisory lock held to the commit), so two at once cannot both pass
/// the count.
pub(crate) async fn insert_webhook(
    conn: &mut AsyncPgConnection,
    url: &str,
    secret: &str,
    event_types: &[String],
    limit: u32,
) -> QueryResult<Option<Webhook>> {
    use diesel_async::AsyncConnection as _;
    conn.transaction(async |conn| {
        db::sql("SELECT pg_advisory_xact_lock(hashtextextended('notification.webhook_subscriptions', 0))")
            .execute(conn)
            .await?;
        let kept: i64 = w::table.count().get_result(conn).await?;
        if kept >= i64::from(limit) {
            return Ok(None);
        }
        diesel::insert_into(w::table)
            .values((
                w::id.eq(Uuid::now_v7()),
                w::url.eq(url),
                w::secret.eq(secret),
                w::event_types.eq(event_types),
            ))
            .returning(Webhook::as_returning())
            .get_result(conn)
            .await
            .map(Some)
    })
    .await
}

/// Every subscription, oldest first.
pub(crate) async fn webhooks(conn: &mut AsyncPgConnection) -> QueryResult<Vec<Webhook>> {
    w::table
        .order(w::id)
        .select(Webhook::as_select())
        .load(conn)
        .await
}

/// One subscription.
pub(crate) async fn webhook(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<Webhook>> {
    w::table
        .find(id)
        .select(Webhook::as_select())
        .first(conn)
        .await
        .optional()
}

/// Removes a subscription; how many rows went (0 or 1).
pub(crate) async fn delete_webhook(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<usize> {
    diesel::delete(w::table.find(id)).execute(conn).await
}

// The `recipients` read model follows the user events, which can arrive
// out of order (several consumers of a broker queue, a requeued or
// redriven message). Its email, name, opt-ins and status each keep the
// newest account version they were taken from (`email_version`,
// `name_version`, `preferences_version`, `status_version`; `NULL`: never
// set, `0`: set before versions), and an event older than the part it
// carries changes nothing. An event from before versions (no version) is
// taken as it comes, as it was, but for a registration's opt-ins, which
// never replaced set ones, and its name, which only name events (newer
// than versions: they always carry one) set since. A change that overtakes the
// registration makes a row not `registered` (perhaps without an address
// or a name): kept, not written to until registered. Raw SQL: `INSERT ...
// ON CONFLICT DO UPDATE` with a condition per part.

/// A user's registration: a recipient from now on, with the email and
/// opt-ins it announced unless newer ones arrived first.
pub(crate) async fn register_recipient(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    email: &str,
    display_name: &str,
    p: NotificationPreferences,
    version: Option<i64>,
) -> QueryResult<usize> {
    db::sql(
        "INSERT INTO recipients AS r (user_id, email, display_name, order_updates, product_news, \
         marketing, email_version, name_version, preferences_version, registered) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7, true) \
         ON CONFLICT (user_id) DO UPDATE SET registered = true, \
         display_name = CASE WHEN (r.name_version IS NULL \
                 OR excluded.name_version > r.name_version) \
                 THEN excluded.display_name ELSE r.display_name END, \
         name_version = GREATEST(r.name_version, excluded.name_version), \
         email = CASE WHEN (excluded.email_version > r.email_version OR excluded.email_version IS NULL \
                 OR r.email_version IS NULL) THEN excluded.email ELSE r.email END, \
         email_version = GREATEST(r.email_version, excluded.email_version), \
         order_updates = CASE WHEN (r.preferences_version IS NULL \
                 OR excluded.preferences_version > r.preferences_version) THEN excluded.order_updates ELSE r.order_updates END, \
         product_news = CASE WHEN (r.preferences_version IS NULL \
                 OR excluded.preferences_version > r.preferences_version) THEN excluded.product_news ELSE r.product_news END, \
         marketing = CASE WHEN (r.preferences_version IS NULL \
                 OR excluded.preferences_version > r.preferences_version) THEN excluded.marketing ELSE r.marketing END, \
         preferences_version = GREATEST(r.preferences_version, excluded.preferences_version), \
         updated_at = now()",
    )
    .bind::<SqlUuid, _>(user_id)
    .bind::<Text, _>(email)
    .bind::<Text, _>(display_name)
    .bind::<Bool, _>(p.order_updates)
    .bind::<Bool, _>(p.product_news)
    .bind::<Bool, _>(p.marketing)
    .bind::<Nullable<BigInt>, _>(version)
    .execute(conn)
    .await
}

/// A recipient's new address, unless a newer one was taken; kept for an
/// account not registered yet.
pub(crate) async fn set_recipient_email(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    email: &str,
    version: Option<i64>,
) -> QueryResult<usize> {
    // A row made here has the default opt-ins, unset (`preferences_version`
    // NULL): the registration's, or any change's, replace them.
    let p = NotificationPreferences::default();
    db::sql(
        "INSERT INTO recipients AS r (user_id, email, order_updates, product_news, marketing, \
         email_version, registered) VALUES ($1, $2, $3, $4, $5, $6, false) \
         ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, \
         email_version = GREATEST(r.email_version, excluded.email_version), updated_at = now() \
         WHERE excluded.email_version > r.email_version OR excluded.email_version IS NULL \
         OR r.email_version IS NULL",
    )
    .bind::<SqlUuid, _>(user_id)
    .bind::<Text, _>(email)
    .bind::<Bool, _>(p.order_updates)
    .bind::<Bool, _>(p.product_news)
    .bind::<Bool, _>(p.marketing)
    .bind::<Nullable<BigInt>, _>(version)
    .execute(conn)
    .await
}

/// A recipient's new opt-ins, unless newer ones were taken; kept for an
/// account not registered yet.
pub(crate) async fn set_recipient_preferences(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    p: NotificationPreferences,
    version: Option<i64>,
) -> QueryResult<usize> {
    db::sql(
        "INSERT INTO recipients AS r (user_id, order_updates, product_news, marketing, \
         preferences_version, registered) VALUES ($1, $2, $3, $4, $5, false) \
         ON CONFLICT (user_id) DO UPDATE SET order_updates = excluded.order_updates, \
         product_news = excluded.product_news, marketing = excluded.marketing, \
         preferences_version = GREATEST(r.preferences_version, excluded.preferences_version), \
         updated_at = now() \
         WHERE excluded.preferences_version > r.preferences_version \
         OR excluded.preferences_version IS NULL OR r.preferences_version IS NULL",
    )
    .bind::<SqlUuid, _>(user_id)
    .bind::<Bool, _>(p.order_updates)
    .bind::<Bool, _>(p.product_news)
    .bind::<Bool, _>(p.marketing)
    .bind::<Nullable<BigInt>, _>(version)
    .execute(conn)
    .await
}

/// A recipient's new name, unless a newer one was taken; kept for an
/// account not registered yet (the registration's name, older, does not
/// replace it).
pub(crate) async fn set_recipient_name(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    display_name: &str,
    version: i64,
) -> QueryResult<usize> {
    // A row made here is not `registered`: no recipient until it is.
    let p = NotificationPreferences::default();
    db::sql(
        "INSERT INTO recipients AS r (user_id, display_name, order_updates, product_news, \
         marketing, name_version, registered) VALUES ($1, $2, $3, $4, $5, $6, false) \
         ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name, \
         name_version = excluded.name_version, updated_at = now() \
         WHERE r.name_version IS NULL OR excluded.name_version > r.name_version",
    )
    .bind::<SqlUuid, _>(user_id)
    .bind::<Text, _>(display_name)
    .bind::<Bool, _>(p.order_updates)
    .bind::<Bool, _>(p.product_news)
    .bind::<Bool, _>(p.marketing)
    .bind::<BigInt, _>(version)
    .execute(conn)
    .await
}

/// Whether a recipient's account is active (not disabled by an admin),
/// unless a newer status was taken; kept for an account not registered
/// yet.
pub(crate) async fn set_recipient_active(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    active: bool,
    version: i64,
) -> QueryResult<usize> {
    let p = NotificationPreferences::default();
    db::sql(
        "INSERT INTO recipients AS r (user_id, order_updates, product_news, marketing, active, \
         status_version, registered) VALUES ($1, $2, $3, $4, $5, $6, false) \
         ON CONFLICT (user_id) DO UPDATE SET active = excluded.active, \
         status_version = excluded.status_version, updated_at = now() \
         WHERE r.status_version IS NULL OR excluded.status_version > r.status_version",
    )
    .bind::<SqlUuid, _>(user_id)
    .bind::<Bool, _>(p.order_updates)
    .bind::<Bool, _>(p.product_news)
    .bind::<Bool, _>(p.marketing)
    .bind::<Bool, _>(active)
    .bind::<BigInt, _>(version)
    .execute(conn)
    .await
}

/// Someone to write to.
#[derive(Queryable)]
pub(crate) struct Recipient {
    pub(crate) user_id: Uuid,
    pub(crate) email: String,
    pub(crate) display_name: String,
}

/// The recipients' columns of [`Recipient`]. A row whose registration
/// was not handled yet holds changes that overtook it, perhaps without an
/// address or a name: not a recipient yet ([`registered`] filters it out).
fn recipient() -> (
    r::user_id,
    diesel::dsl::AssumeNotNull<r::email>,
    diesel::dsl::AssumeNotNull<r::display_name>,
) {
    (
        r::user_id,
        r::email.assume_not_null(),
        r::display_name.assume_not_null(),
    )
}

/// Whether a row is a registered recipient (see [`recipient`]): its
/// registration was handled, which gives it an address and a name.
fn registered() -> diesel::dsl::And<
    diesel::dsl::And<r::registered, diesel::dsl::IsNotNull<r::email>>,
    diesel::dsl::IsNotNull<r::display_name>,
> {
    r::registered
        .and(r::email.is_not_null())
        .and(r::display_name.is_not_null())
}

/// Those who opted into product news, but for disabled accounts: up to
/// `limit` of them after `after`, in id order (a page of the audience).
pub(crate) async fn product_news_recipients(
    conn: &mut AsyncPgConnection,
    after: Option<Uuid>,
    limit: usize,
) -> QueryResult<Vec<Recipient>> {
    let mut query = r::table
        .filter(r::product_news.and(r::active).and(registered()))
        .order(r::user_id)
        .limit(i64::try_from(limit).unwrap_or(i64::MAX))
        .select(recipient())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(r::user_id.gt(after));
    }
    query.load(conn).await
}

/// Those of `customers` who are known and still opted into order updates.
pub(crate) async fn order_update_recipients(
    conn: &mut AsyncPgConnection,
    customers: &[Uuid],
) -> QueryResult<Vec<Recipient>> {
    r::table
        .filter(
            r::user_id
                .eq_any(customers)
                .and(r::order_updates)
                .and(registered()),
        )
        .select(recipient())
        .load(conn)
        .await
}

/// Those of `customers` whose registration this module has not handled
/// yet: it has no address for them. Each customer's recipient lock is
/// taken first ([`lock_recipients`]), so a registration handled meanwhile
/// either is seen here or sees what this transaction holds for it.
pub(crate) async fn unregistered(
    conn: &mut AsyncPgConnection,
    customers: &[Uuid],
) -> QueryResult<Vec<Uuid>> {
    lock_recipients(conn, customers).await?;
    let known: Vec<Uuid> = r::table
        .filter(r::user_id.eq_any(customers).and(registered()))
        .select(r::user_id)
        .load(conn)
        .await?;
    let mut unknown: Vec<Uuid> = customers
        .iter()
        .copied()
        .filter(|c| !known.contains(c))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    Ok(unknown)
}

/// Takes the transaction's lock of each of `customers` as a recipient (an
/// advisory lock: the row may not exist yet), in id order: an order update
/// deciding to hold a message and a registration releasing the held ones
/// take turns, or the registration could miss a message held at the same
/// moment and leave it held for ever.
pub(crate) async fn lock_recipients(
    conn: &mut AsyncPgConnection,
    customers: &[Uuid],
) -> QueryResult<()> {
    if customers.is_empty() {
        return Ok(());
    }
    let mut ids = customers.to_vec();
    ids.sort_unstable();
    ids.dedup();
    db::sql(
        "SELECT count(pg_advisory_xact_lock(hashtextextended('notification.recipient:' || id::text, 0))) \
         FROM (SELECT id FROM unnest($1::uuid[]) AS id ORDER BY id) AS sorted",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .execute(conn)
    .await
    .map(drop)
}

/// The held messages of `customer`: (id, the event they hold), locked.
pub(crate) async fn held_for(
    conn: &mut AsyncPgConnection,
    customer: Uuid,
) -> QueryResult<Vec<(Uuid, String)>> {
    n::table
        .filter(n::recipient_user_id.eq(customer).and(n::status.eq("held")))
        .select((n::id, n::body))
        .order(n::id)
        .for_update()
        .load(conn)
        .await
}

/// A held message written out to its recipient, due now, and queued now:
/// its age (the retention, a refused message's patience) counts from here,
/// not from the event, which may be months old.
pub(crate) async fn write_out(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    to: &str,
    subject: &str,
    body: &str,
) -> QueryResult<usize> {
    diesel::update(n::table.find(id).filter(n::status.eq("held")))
        .set((
            n::status.eq("pending"),
            n::destination.eq(to),
            n::subject.eq(subject),
            n::body.eq(body),
            n::next_attempt_at.eq(now),
            n::created_at.eq(now),
        ))
        .execute(conn)
        .await
}

/// A held message that cannot be written out: failed, with `error`.
pub(crate) async fn fail_held(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    error: &str,
) -> QueryResult<usize> {
    diesel::update(n::table.find(id).filter(n::status.eq("held")))
        .set((n::status.eq("failed"), n::last_error.eq(error)))
        .execute(conn)
        .await
}

/// Up to `limit` registered recipients who still have held messages: their
/// registration was handled by an instance from before held messages,
/// during a rolling upgrade, which did not write them out.
pub(crate) async fn stranded_held(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> QueryResult<Vec<Uuid>> {
    #[derive(QueryableByName)]
    struct Stranded {
        #[diesel(sql_type = SqlUuid)]
        user_id: Uuid,
    }
    // Raw: a semi-join on the held rows' partial index.
    let rows: Vec<Stranded> = db::sql(
        "SELECT r.user_id FROM recipients AS r \
         WHERE r.registered AND r.email IS NOT NULL AND r.display_name IS NOT NULL \
         AND EXISTS (SELECT 1 FROM notifications AS n \
                     WHERE n.status = 'held' AND n.recipient_user_id = r.user_id) \
         LIMIT $1",
    )
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|s| s.user_id).collect())
}

/// Drops `customer`'s held messages: they turned order updates off.
pub(crate) async fn drop_held(conn: &mut AsyncPgConnection, customer: Uuid) -> QueryResult<usize> {
    diesel::delete(n::table.filter(n::recipient_user_id.eq(customer).and(n::status.eq("held"))))
        .execute(conn)
        .await
}

/// A webhook subscription as the handler needs it.
#[derive(Queryable, Selectable)]
#[diesel(table_name = webhook_subscriptions)]
pub(crate) struct Subscription {
    pub(crate) id: Uuid,
    pub(crate) url: String,
}

/// The subscriptions to `event_type` (`event_types @> ARRAY[event_type]`:
/// for one element, the same as `event_type = ANY (event_types)`).
pub(crate) async fn subscriptions_to(
    conn: &mut AsyncPgConnection,
    event_type: &str,
) -> QueryResult<Vec<Subscription>> {
    w::table
        .filter(w::event_types.contains(vec![event_type]))
        .select(Subscription::as_select())
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

/// Queues messages, in one statement, each once per event, channel,
/// destination and subscription or account (a redelivered event queues
/// nothing new: `notifications_once`). An email with no address yet is
/// stored `held` (an order update waiting for its customer's registration:
/// [`held_for`]), the sender never claims it.
pub(crate) async fn queue(conn: &mut AsyncPgConnection, all: &[Queued<'_>]) -> QueryResult<usize> {
    if all.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = all.iter().map(|_| Uuid::now_v7()).collect();
    let events: Vec<Uuid> = all.iter().map(|m| m.event.id).collect();
    let types: Vec<&str> = all.iter().map(|m| m.event.event_type.as_str()).collect();
    let requests: Vec<Option<&str>> = all.iter().map(|m| m.event.request_id.as_deref()).collect();
    let recipients: Vec<Option<Uuid>> = all.iter().map(|m| m.recipient).collect();
    let channels: Vec<&str> = all.iter().map(|m| m.channel).collect();
    let destinations: Vec<&str> = all.iter().map(|m| m.destination).collect();
    let subscriptions: Vec<Option<Uuid>> = all.iter().map(|m| m.subscription).collect();
    let subjects: Vec<&str> = all.iter().map(|m| m.subject).collect();
    let bodies: Vec<&str> = all.iter().map(|m| m.body).collect();
    let statuses: Vec<&str> = all
        .iter()
        .map(|m| {
            if m.channel == "email" && m.destination.is_empty() {
                "held"
            } else {
                "pending"
            }
        })
        .collect();
    // Bulk email is claimed after every other ([`claim_due`]).
    let bulk: Vec<bool> = all
        .iter()
        .map(|m| m.channel == "email" && BULK_EVENTS.contains(&m.event.event_type.as_str()))
        .collect();
    // Raw: one text for any number of messages (`unnest`, one array per
    // column), so it is prepared once per connection; diesel's multi-row
    // `VALUES` is a new text per count, prepared and planned on each call.
    db::sql(
        "INSERT INTO notifications (id, event_id, event_type, request_id, recipient_user_id, \
         channel, destination, subscription_id, subject, body, status, bulk) \
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::uuid[], \
         $6::text[], $7::text[], $8::uuid[], $9::text[], $10::text[], $11::text[], $12::bool[]) \
         ON CONFLICT ON CONSTRAINT notifications_once DO NOTHING",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<SqlUuid>, _>(events)
    .bind::<Array<Text>, _>(types)
    .bind::<Array<Nullable<Text>>, _>(requests)
    .bind::<Array<Nullable<SqlUuid>>, _>(recipients)
    .bind::<Array<Text>, _>(channels)
    .bind::<Array<Text>, _>(destinations)
    .bind::<Array<Nullable<SqlUuid>>, _>(subscriptions)
    .bind::<Array<Text>, _>(subjects)
    .bind::<Array<Text>, _>(bodies)
    .bind::<Array<Text>, _>(statuses)
    .bind::<Array<diesel::sql_types::Bool>, _>(bulk)
    .execute(conn)
    .await
}

/// The events whose emails go to a whole audience (every customer who
/// opted into product news): claimed after every other due email, so that
/// an order's or an account's email is not held up behind a fan-out.
pub(crate) const BULK_EVENTS: &[&str] =
    &[<catalog_api::events::ProductPriceChanged as kernel::IntegrationEvent>::TYPE];

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
    /// The end of this sender's lease, which stands for its claim: a record
    /// of the message is kept only while the row still says it (see
    /// [`claim_due`]).
    #[diesel(sql_type = Timestamptz)]
    pub(crate) claimed_until: DateTime<Utc>,
    /// When it was queued.
    #[diesel(sql_type = Timestamptz)]
    pub(crate) created_at: DateTime<Utc>,
}

/// How many messages of each kind a claim takes at most.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) emails: i64,
    /// Webhook messages (every channel but email).
    pub(crate) webhooks: i64,
}

/// Claims messages due now (up to `limits` of each kind, none to the
/// `excluded` destinations), oldest first (bulk email after every other
/// email: [`BULK_EVENTS`]), for `lease_ms`: in
/// one statement, they are put off by the lease, so that no other sender
/// takes them while this one sends (rows another sender is claiming are
/// skipped). A sender that dies mid-round leaves them to be sent again once
/// the lease is over; one that finishes records each ([`mark_sent`],
/// [`mark_not_sent`], [`defer`]) and hands back what it did not try
/// ([`release`]). Each of those changes a row only while it is pending
/// with the lease this claim set (`claimed_until`): once the lease is over
/// and another sender has claimed the row, this one's record is dropped
/// rather than undo that sender's.
pub(crate) async fn claim_due(
    conn: &mut AsyncPgConnection,
    limits: Limits,
    lease_ms: i64,
    excluded: &[String],
) -> QueryResult<Vec<Due>> {
    // Raw: data-modifying CTEs with `FOR UPDATE SKIP LOCKED`, and the
    // subscription's key joined to what it returns; the builder has neither.
    db::sql(
        "WITH emails AS ( \
             SELECT id FROM notifications WHERE status = 'pending' AND next_attempt_at <= now() \
             AND channel = 'email' \
             ORDER BY bulk, created_at LIMIT $1 FOR UPDATE SKIP LOCKED \
         ), others AS ( \
             SELECT id FROM notifications WHERE status = 'pending' AND next_attempt_at <= now() \
             AND channel <> 'email' AND destination <> ALL($3) \
             ORDER BY created_at LIMIT $4 FOR UPDATE SKIP LOCKED \
         ), due AS (SELECT id FROM emails UNION ALL SELECT id FROM others), \
         claimed AS ( \
             UPDATE notifications n \
             SET next_attempt_at = now() + make_interval(secs => $2::float8 / 1000) \
             FROM due WHERE n.id = due.id \
             RETURNING n.id, n.event_type, n.request_id, n.channel, n.destination, n.subject, \
                       n.body, n.attempts, n.subscription_id, n.created_at, n.next_attempt_at, n.bulk \
         ) \
         SELECT c.id, c.event_type, c.request_id, c.channel, c.destination, c.subject, c.body, \
                c.attempts, w.secret, c.next_attempt_at AS claimed_until, c.created_at \
         FROM claimed c LEFT JOIN webhook_subscriptions w ON w.id = c.subscription_id \
         ORDER BY c.bulk, c.created_at",
    )
    .bind::<BigInt, _>(limits.emails)
    .bind::<BigInt, _>(lease_ms)
    .bind::<diesel::sql_types::Array<Text>, _>(excluded)
    .bind::<BigInt, _>(limits.webhooks)
    .load(conn)
    .await
}

/// Hands the messages `ids`, claimed until `claimed_until`, back, due now:
/// the round ended (its time, or the process stopping) before it tried
/// them.
pub(crate) async fn release(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
    claimed_until: DateTime<Utc>,
) -> QueryResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    diesel::update(
        n::table
            .filter(n::id.eq_any(ids))
            .filter(n::status.eq("pending"))
            .filter(n::next_attempt_at.eq(claimed_until)),
    )
    .set(n::next_attempt_at.eq(now))
    .execute(conn)
    .await
}

/// Puts a message off for `wait_ms` without spending an attempt (an open
/// breaker).
pub(crate) async fn defer(
    conn: &mut AsyncPgConnection,
    item: &Due,
    reason: &str,
    wait_ms: i64,
) -> QueryResult<usize> {
    // Raw: `now() + interval` on the db clock; the builder's `now` has no `timestamptz` arithmetic.
    db::sql(
        "UPDATE notifications SET last_error = $2, \
         next_attempt_at = now() + make_interval(secs => $3::float8 / 1000) \
         WHERE id = $1 AND status = 'pending' AND next_attempt_at = $4",
    )
    .bind::<SqlUuid, _>(item.id)
    .bind::<Text, _>(reason)
    .bind::<BigInt, _>(wait_ms)
    .bind::<Timestamptz, _>(item.claimed_until)
    .execute(conn)
    .await
}

/// Records the delivery of the messages `ids` claimed until
/// `claimed_until` (each one more attempt), in one statement.
pub(crate) async fn mark_sent(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
    claimed_until: DateTime<Utc>,
) -> QueryResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    diesel::update(
        n::table
            .filter(n::id.eq_any(ids))
            .filter(n::status.eq("pending"))
            .filter(n::next_attempt_at.eq(claimed_until)),
    )
    .set((
        n::status.eq("sent"),
        n::sent_at.eq(now),
        n::attempts.eq(n::attempts + 1),
        n::last_error.eq(None::<&str>),
    ))
    .execute(conn)
    .await
}

/// Records a failed attempt: retried in `retry_in_ms`, or failed for good
/// when `give_up`.
pub(crate) async fn mark_not_sent(
    conn: &mut AsyncPgConnection,
    item: &Due,
    attempts: i32,
    error: &str,
    give_up: bool,
    retry_in_ms: i64,
) -> QueryResult<usize> {
    // Raw: `now() + make_interval(...)` on the database's clock (see `defer`).
    db::sql(
        "UPDATE notifications SET attempts = $2, last_error = $3, \
         status = CASE WHEN $4 THEN 'failed' ELSE 'pending' END, \
         next_attempt_at = now() + make_interval(secs => $5::float8 / 1000) \
         WHERE id = $1 AND status = 'pending' AND next_attempt_at = $6",
    )
    .bind::<SqlUuid, _>(item.id)
    .bind::<Integer, _>(attempts)
    .bind::<Text, _>(error)
    .bind::<Bool, _>(give_up)
    .bind::<BigInt, _>(retry_in_ms)
    .bind::<Timestamptz, _>(item.claimed_until)
    .execute(conn)
    .await
}

/// Rows [`prune`] deletes per statement.
pub(crate) const PRUNE_BATCH: i64 = 5000;

/// Deletes the sent and failed messages queued more than `days` ago, and
/// the order updates held that long for a customer whose registration never
/// came (placed with a token of no account); how many. Updates held for a
/// customer who did register are kept, however old: the upkeep
/// ([`stranded_held`]) writes them out, after this prune.
///
/// In statements of [`PRUNE_BATCH`] rows, until one deletes fewer (or
/// `stop` is set): one `DELETE` of a burst's worth of rows (a price drop
/// to every opted-in customer) ran into the statement timeout, deleting
/// nothing, at every prune after, as the relay's did. The held updates are
/// pruned even when the settled ones fail.
#[tracing::instrument(name = "notification.repo.prune", skip_all)]
pub(crate) async fn prune(
    conn: &mut AsyncPgConnection,
    days: u32,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> QueryResult<usize> {
    let days = i32::try_from(days).unwrap_or(i32::MAX);
    // Raw: the age is `now() - interval` on the database's clock.
    // The outer conditions repeat the inner ones: a held update written
    // out (`write_out`: pending, queued now) while the statement runs is
    // checked again as it is now, and kept.
    let settled = "DELETE FROM notifications WHERE id IN (SELECT id FROM notifications \
                   WHERE status IN ('sent', 'failed') \
                   AND created_at < now() - make_interval(days => $1) LIMIT $2) \
                   AND status IN ('sent', 'failed') \
                   AND created_at < now() - make_interval(days => $1)";
    let held = "DELETE FROM notifications WHERE id IN (SELECT n.id FROM notifications AS n \
                WHERE n.status = 'held' \
                AND n.created_at < now() - make_interval(days => $1) \
                AND NOT EXISTS (SELECT 1 FROM recipients AS r WHERE r.user_id = n.recipient_user_id \
                                AND r.registered AND r.email IS NOT NULL AND r.display_name IS NOT NULL) \
                LIMIT $2) \
                AND status = 'held' AND created_at < now() - make_interval(days => $1)";
    let mut pruned = 0;
    let mut failed = None;
    for statement in [settled, held] {
        if *stop.borrow() {
            break;
        }
        loop {
            let deleted = db::sql(statement)
                .bind::<diesel::sql_types::Integer, _>(days)
                .bind::<BigInt, _>(PRUNE_BATCH)
                .execute(conn)
                .await;
            match deleted {
                Ok(n) => {
                    pruned += n;
                    if i64::try_from(n).unwrap_or(i64::MAX) < PRUNE_BATCH || *stop.borrow() {
                        break;
                    }
                }
                Err(e) => {
                    failed.get_or_insert(e);
                    break;
                }
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(pruned),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const BOTH: Limits = Limits {
        emails: 20,
        webhooks: 20,
    };

    async fn pool_of(db: &testkit::TestDatabase) -> db::Pool {
        db::build_pool(&db::PoolOptions {
            url: db.url().to_owned(),
            schema: "notification",
            max_size: 1,
            runtimes: 1,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        })
        .unwrap()
    }

    /// A prune deletes in statements of at most `PRUNE_BATCH` rows (one
    /// statement for a burst's worth timed out, deleting nothing, at every
    /// prune), until all that is due has gone; younger rows stay. A
    /// statement trigger of the test records each statement's count.
    #[tokio::test]
    async fn a_prune_deletes_in_batches_until_all_due_rows_are_gone() {
        let db = testkit::TestDatabase::create(&[crate::MODULE_MIGRATIONS]).await;
        let pool = pool_of(&db).await;
        let mut conn = pool.get().await.unwrap();
        for statement in [
            "CREATE TABLE prune_log (deleted bigint NOT NULL)",
            "CREATE FUNCTION log_prune() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN INSERT INTO prune_log SELECT count(*) FROM gone; RETURN NULL; END $$",
            "CREATE TRIGGER log_prune AFTER DELETE ON notifications \
             REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION log_prune()",
            "INSERT INTO notifications \
             (id, event_id, event_type, channel, destination, subject, body, status, created_at) \
             SELECT gen_random_uuid(), gen_random_uuid(), 't', 'email', 'a@example.com', 's', 'b', \
                    'sent', now() - make_interval(days => CASE WHEN i <= 10001 THEN 100 ELSE 1 END) \
             FROM generate_series(1, 10010) AS i",
        ] {
            db::sql(statement).execute(&mut conn).await.unwrap();
        }
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        assert_eq!(prune(&mut conn, 90, &stop).await.unwrap(), 10001);
        #[derive(diesel::QueryableByName)]
        struct Logged {
            #[diesel(sql_type = BigInt)]
            deleted: i64,
        }
        let logged: Vec<Logged> = db::sql("SELECT deleted FROM prune_log")
            .load(&mut conn)
            .await
            .unwrap();
        let counts: Vec<i64> = logged.iter().map(|l| l.deleted).collect();
        assert_eq!(
            counts,
            [PRUNE_BATCH, PRUNE_BATCH, 1, 0],
            "settled in three statements, then the held (none)"
        );
        #[derive(diesel::QueryableByName)]
        struct Left {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let left: Left = db::sql("SELECT count(*) AS n FROM notifications")
            .get_result(&mut conn)
            .await
            .unwrap();
        assert_eq!(left.n, 9, "the younger rows stay");
    }

    /// Bulk email (a price drop to every opted-in customer) is claimed
    /// after every other due email: an order's email queued after a
    /// fan-out goes in the next claim, not after the whole audience.
    /// `queue` marks it by its event's type.
    #[tokio::test]
    async fn an_order_email_queued_after_a_fan_out_is_claimed_before_it() {
        let db = testkit::TestDatabase::create(&[crate::MODULE_MIGRATIONS]).await;
        let pool = pool_of(&db).await;
        let mut conn = pool.get().await.unwrap();
        let event = |event_type: &str| Envelope {
            id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            source: "test".to_owned(),
            aggregate_id: "a".to_owned(),
            occurred_at: Utc::now(),
            request_id: None,
            causation_id: None,
            payload: serde_json::json!({}),
            traceparent: None,
            tracestate: None,
        };
        let drop = event("catalog.product_price_changed.v1");
        let addresses: Vec<String> = (0..30).map(|i| format!("fan{i}@example.com")).collect();
        let fan_out: Vec<Queued<'_>> = addresses
            .iter()
            .map(|to| Queued {
                event: &drop,
                recipient: None,
                channel: "email",
                destination: to,
                subscription: None,
                subject: "Price drop",
                body: "b",
            })
            .collect();
        assert_eq!(queue(&mut conn, &fan_out).await.unwrap(), 30);
        let confirmed = event("order.confirmed.v1");
        let order = [Queued {
            event: &confirmed,
            recipient: None,
            channel: "email",
            destination: "buyer@example.com",
            subscription: None,
            subject: "Order confirmed",
            body: "b",
        }];
        assert_eq!(queue(&mut conn, &order).await.unwrap(), 1);

        let limits = Limits {
            emails: 20,
            webhooks: 0,
        };
        let first = claim_due(&mut conn, limits, 60_000, &[]).await.unwrap();
        assert_eq!(first.len(), 20);
        assert!(
            first.iter().any(|d| d.destination == "buyer@example.com"),
            "the order's email waits behind the fan-out"
        );
        let rest = claim_due(&mut conn, limits, 60_000, &[]).await.unwrap();
        assert_eq!(rest.len(), 11, "the fan-out's, oldest first");
    }

    /// A claim takes each kind up to its limit, oldest first, and leaves
    /// the webhook URLs being sent to alone.
    #[tokio::test]
    async fn a_claim_takes_each_kind_up_to_its_limit_and_skips_busy_receivers() {
        let db = testkit::TestDatabase::create(&[crate::MODULE_MIGRATIONS]).await;
        let pool = pool_of(&db).await;
        let mut conn = pool.get().await.unwrap();
        db::sql(
            "INSERT INTO notifications \
             (id, event_id, event_type, channel, destination, subject, body, created_at) \
             SELECT gen_random_uuid(), gen_random_uuid(), 't', channel, destination, 's', 'b', \
                    now() - make_interval(secs => 100 - i) \
             FROM (VALUES (1, 'email', 'a@example.com'), (2, 'email', 'b@example.com'), \
                          (3, 'webhook', 'https://busy.example/h'), \
                          (4, 'webhook', 'https://one.example/h'), \
                          (5, 'webhook', 'https://two.example/h'), \
                          (6, 'webhook', 'https://one.example/h')) AS v (i, channel, destination)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let limits = Limits {
            emails: 0,
            webhooks: 2,
        };
        let busy = ["https://busy.example/h".to_owned()];
        let first = claim_due(&mut conn, limits, 60_000, &busy).await.unwrap();
        let taken: Vec<&str> = first.iter().map(|d| d.destination.as_str()).collect();
        assert_eq!(taken, ["https://one.example/h", "https://two.example/h"]);
        let emails = Limits {
            emails: 1,
            webhooks: 0,
        };
        let second = claim_due(&mut conn, emails, 60_000, &busy).await.unwrap();
        let taken: Vec<&str> = second.iter().map(|d| d.destination.as_str()).collect();
        assert_eq!(taken, ["a@example.com"]);
        let rest = claim_due(&mut conn, BOTH, 60_000, &[]).await.unwrap();
        let taken: Vec<&str> = rest.iter().map(|d| d.destination.as_str()).collect();
        assert_eq!(
            taken,
            [
                "b@example.com",
                "https://busy.example/h",
                "https://one.example/h"
            ]
        );
    }

    async fn state(conn: &mut AsyncPgConnection) -> (String, DateTime<Utc>) {
        n::table
            .select((n::status, n::next_attempt_at))
            .first(conn)
            .await
            .unwrap()
    }

    /// A claim holds a message for its lease; once the lease is over and
    /// another sender has claimed it, the first sender's late records
    /// (sent, not sent, deferred, handed back) change nothing, and the
    /// second's stand.
    #[tokio::test]
    async fn a_claim_that_outlived_its_lease_cannot_undo_the_next_one() {
        let db = testkit::TestDatabase::create(&[crate::MODULE_MIGRATIONS]).await;
        let pool = pool_of(&db).await;
        let mut conn = pool.get().await.unwrap();
        db::sql(
            "INSERT INTO notifications (id, event_id, event_type, channel, destination, subject, body) \
             VALUES (gen_random_uuid(), gen_random_uuid(), 'order.confirmed.v1', 'email', \
                     'a@example.com', 's', 'b')",
        )
        .execute(&mut conn)
        .await
        .unwrap();

        let first = claim_due(&mut conn, BOTH, 60_000, &[]).await.unwrap();
        assert_eq!(first.len(), 1);
        assert!(first[0].claimed_until > Utc::now() + chrono::Duration::seconds(50));
        assert!(
            claim_due(&mut conn, BOTH, 60_000, &[])
                .await
                .unwrap()
                .is_empty(),
            "claimed: no other sender takes it"
        );

        // The lease runs out; another sender claims the message.
        db::sql("UPDATE notifications SET next_attempt_at = now() - interval '1 second'")
            .execute(&mut conn)
            .await
            .unwrap();
        let second = claim_due(&mut conn, BOTH, 60_000, &[]).await.unwrap();
        assert_eq!(second.len(), 1);
        let taken = state(&mut conn).await;
        assert_eq!(taken, ("pending".to_owned(), second[0].claimed_until));

        // The first sender's records come late: none of them counts.
        let late = &first[0];
        assert_eq!(
            mark_sent(&mut conn, &[late.id], late.claimed_until)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            mark_not_sent(&mut conn, late, 1, "x", true, 10)
                .await
                .unwrap(),
            0
        );
        assert_eq!(defer(&mut conn, late, "x", 10).await.unwrap(), 0);
        assert_eq!(
            release(&mut conn, &[late.id], late.claimed_until)
                .await
                .unwrap(),
            0
        );
        assert_eq!(state(&mut conn).await, taken);

        // The second sender's does.
        let current = &second[0];
        assert_eq!(
            mark_sent(&mut conn, &[current.id], current.claimed_until)
                .await
                .unwrap(),
            1
        );
        assert_eq!(state(&mut conn).await.0, "sent");
    }
}
