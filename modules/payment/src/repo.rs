//! All of the payment module's SQL: `payments`, one row per order, and its
//! append-only `ledger`. Functions take a connection and return rows as
//! stored; [`Stored::into_payment`] turns them into the contract's DTO.
//!
//! A move is raw SQL (`db::sql`, prepared once per connection): one
//! statement, an `UPDATE ... RETURNING` fused with the INSERT of its ledger
//! line in a CTE, which diesel's query builder cannot express. The reads and
//! the opening use the query builder.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use kernel::{Currency, Money, OrderId};
use payment_api::{AuthorizePayment, LedgerEntry, Payment, PaymentId, PaymentStatus};
use uuid::Uuid;

use crate::domain::AtProvider;

diesel::table! {
    payment.payments (id) {
        id -> Uuid,
        order_id -> Uuid,
        customer_id -> Uuid,
        amount_minor -> BigInt,
        currency -> Text,
        payment_method -> Text,
        card_last4 -> Text,
        status -> Text,
        provider_ref -> Nullable<Text>,
        decline_code -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    payment.ledger (id) {
        id -> BigInt,
        payment_id -> Uuid,
        kind -> Text,
        amount_minor -> BigInt,
        currency -> Text,
        reason -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(ledger -> payments (payment_id));
diesel::allow_tables_to_appear_in_same_query!(payments, ledger);

#[derive(QueryableByName, Queryable, Selectable)]
#[diesel(table_name = payments)]
struct Row {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    order_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    customer_id: Uuid,
    #[diesel(sql_type = BigInt)]
    amount_minor: i64,
    #[diesel(sql_type = Text)]
    currency: String,
    #[diesel(sql_type = Text)]
    card_last4: String,
    #[diesel(sql_type = Text)]
    payment_method: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Text>)]
    provider_ref: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    decline_code: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
}

/// A payment moved by [`record`], with its new ledger line (absent when the
/// line existed already).
#[derive(QueryableByName)]
struct Moved {
    #[diesel(embed)]
    payment: Row,
    #[diesel(sql_type = Nullable<Text>)]
    line_kind: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    line_amount_minor: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    line_currency: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    line_reason: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    line_created_at: Option<DateTime<Utc>>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = ledger)]
struct LedgerRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = BigInt)]
    amount_minor: i64,
    #[diesel(sql_type = Text)]
    currency: String,
    #[diesel(sql_type = Nullable<Text>)]
    reason: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, order_id, customer_id, amount_minor, currency, card_last4, \
     payment_method, status, provider_ref, decline_code, created_at";

/// A payment row with (some of) its ledger, as read.
pub(crate) struct Stored {
    row: Row,
    ledger: Vec<LedgerRow>,
}

impl Stored {
    /// The payment as the contract's DTO, and what the provider knows it
    /// by. A row the table's constraints should have refused is reported.
    pub(crate) fn into_payment(self) -> Result<(Payment, AtProvider), String> {
        let Stored { row, ledger } = self;
        let money = |minor: i64, currency: &str| {
            currency
                .parse::<Currency>()
                .map(|c| Money::new(minor, c))
                .map_err(|e| format!("stored currency: {e}"))
        };
        let at_provider = AtProvider {
            reference: row.provider_ref,
            method: row.payment_method,
        };
        let payment = Payment {
            id: PaymentId::from(row.id),
            order_id: OrderId::from(row.order_id),
            customer_id: row.customer_id,
            amount: money(row.amount_minor, &row.currency)?,
            status: row.status.parse()?,
            card_last4: row.card_last4,
            decline_code: row.decline_code,
            ledger: ledger
                .into_iter()
                .map(|l| {
                    Ok(LedgerEntry {
                        amount: money(l.amount_minor, &l.currency)?,
                        kind: l.kind,
                        reason: l.reason,
                        at: l.created_at,
                    })
                })
                .collect::<Result<_, String>>()?,
            created_at: row.created_at,
        };
        Ok((payment, at_provider))
    }
}

/// Which key [`load`] finds a payment by.
#[derive(Clone, Copy)]
pub(crate) enum Key {
    /// The payment's own id.
    Id(PaymentId),
    /// The order it pays for.
    Order(OrderId),
}

/// The payment found by `key`, with its whole ledger in order.
pub(crate) async fn load(conn: &mut AsyncPgConnection, key: Key) -> QueryResult<Option<Stored>> {
    // One statement: the payment on each of its ledger lines (a payment
    // has a few), or once with none.
    let joined = payments::table
        .left_join(ledger::table)
        .order(ledger::id)
        .select((Row::as_select(), Option::<LedgerRow>::as_select()));
    let rows: Vec<(Row, Option<LedgerRow>)> = match key {
        Key::Id(id) => {
            joined
                .filter(payments::id.eq(id.as_uuid()))
                .load(conn)
                .await?
        }
        Key::Order(order) => {
            joined
                .filter(payments::order_id.eq(order.as_uuid()))
                .load(conn)
                .await?
        }
    };
    let mut rows = rows.into_iter();
    let Some((row, first)) = rows.next() else {
        return Ok(None);
    };
    let ledger = first
        .into_iter()
        .chain(rows.filter_map(|(_, line)| line))
        .collect();
    Ok(Some(Stored { row, ledger }))
}

/// Opens the payment of `request`'s order, `authorizing`; `None` when the
/// order has one already, or was voided before it had one ([`bar`]).
pub(crate) async fn insert(
    conn: &mut AsyncPgConnection,
    request: &AuthorizePayment,
) -> QueryResult<Option<Stored>> {
    // Raw: an INSERT ... SELECT guarded by the bar, which the query
    // builder's `values` cannot express.
    let row: Option<Row> = db::sql(format!(
        "INSERT INTO payments (id, order_id, customer_id, amount_minor, currency, \
         payment_method, card_last4, status) \
         SELECT $1, $2, $3, $4, $5, $6, $7, 'authorizing' \
         WHERE NOT EXISTS (SELECT 1 FROM voided_orders WHERE order_id = $2) \
         ON CONFLICT (order_id) DO NOTHING RETURNING {COLUMNS}"
    ))
    .bind::<SqlUuid, _>(PaymentId::generate().as_uuid())
    .bind::<SqlUuid, _>(request.order_id.as_uuid())
    .bind::<SqlUuid, _>(request.customer_id)
    .bind::<BigInt, _>(request.amount.amount_minor())
    .bind::<Text, _>(request.amount.currency().as_str())
    .bind::<Text, _>(&request.payment_method.token)
    .bind::<Text, _>(&request.payment_method.card_last4)
    .get_result(conn)
    .await
    .optional()?;
    Ok(row.map(|row| Stored {
        row,
        ledger: Vec::new(),
    }))
}

/// Bars `order`, found without a payment by a void, from ever being
/// authorized: its authorization may still be on its way from a caller
/// that gave up on it. Repeating it changes nothing.
pub(crate) async fn bar(conn: &mut AsyncPgConnection, order: OrderId) -> QueryResult<()> {
    db::sql("INSERT INTO voided_orders (order_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind::<SqlUuid, _>(order.as_uuid())
        .execute(conn)
        .await?;
    Ok(())
}

/// Up to `limit` payments still `authorizing`, opened more than `older_than`
/// ago, whose order is barred ([`bar`]): authorizations that met the bar
/// and could not release their hold then (the provider did not answer).
pub(crate) async fn barred_authorizing(
    conn: &mut AsyncPgConnection,
    older_than: std::time::Duration,
    limit: i64,
) -> QueryResult<Vec<Uuid>> {
    #[derive(QueryableByName)]
    struct Barred {
        #[diesel(sql_type = SqlUuid)]
        order_id: Uuid,
    }
    let rows: Vec<Barred> = db::sql(
        "SELECT p.order_id FROM payments p JOIN voided_orders v USING (order_id) \
         WHERE p.status = 'authorizing' \
         AND p.created_at < now() - make_interval(secs => $1) \
         ORDER BY p.created_at LIMIT $2",
    )
    .bind::<diesel::sql_types::Double, _>(older_than.as_secs_f64())
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.order_id).collect())
}

/// Forgets the bars older than `days` days; how many went.
pub(crate) async fn prune_bars(conn: &mut AsyncPgConnection, days: i32) -> QueryResult<usize> {
    db::sql("DELETE FROM voided_orders WHERE voided_at < now() - make_interval(days => $1)")
        .bind::<diesel::sql_types::Integer, _>(days)
        .execute(conn)
        .await
}

/// What a move writes besides the new status.
pub(crate) struct Step<'a> {
    pub(crate) from: PaymentStatus,
    pub(crate) to: PaymentStatus,
    /// The provider's authorization id, once known.
    pub(crate) provider_ref: Option<&'a str>,
    /// Why (a decline code, an abandonment): the ledger line's reason, and
    /// the payment's `decline_code` when the step declines it.
    pub(crate) reason: Option<&'a str>,
}

/// Moves the payment of `order` as `step` says and writes its ledger line,
/// in one statement (no transaction round trips; the line's foreign key
/// sees the moved row). `None` when the payment was not in `step.from`, or
/// when `step` authorizes a payment whose order was barred meanwhile
/// ([`bar`]: the void that barred it missed the payment's opening);
/// `Some(None)` when it moved but its line existed already; otherwise the
/// moved payment with its new line as its only ledger entry.
pub(crate) async fn record(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    step: &Step<'_>,
) -> QueryResult<Option<Option<Stored>>> {
    // Raw: the move and its ledger line in one CTE (see the module doc).
    let moved: Option<Moved> = db::sql(format!(
        "WITH moved AS (UPDATE payments SET status = $2, provider_ref = COALESCE($3, provider_ref), \
         decline_code = CASE WHEN $2 = 'declined' THEN COALESCE($4, decline_code) ELSE decline_code END, \
         updated_at = now() \
         WHERE order_id = $1 AND status = $5 \
         AND ($2 <> 'authorized' OR NOT EXISTS (SELECT 1 FROM voided_orders WHERE order_id = $1)) \
         RETURNING {COLUMNS}), \
         line AS (INSERT INTO ledger (payment_id, kind, amount_minor, currency, reason, provider_ref) \
         SELECT id, $2, amount_minor, currency, $4, provider_ref FROM moved \
         ON CONFLICT ON CONSTRAINT ledger_once DO NOTHING \
         RETURNING kind AS line_kind, amount_minor AS line_amount_minor, currency AS line_currency, \
         reason AS line_reason, created_at AS line_created_at) \
         SELECT moved.*, line.* FROM moved LEFT JOIN line ON true"
    ))
    .bind::<SqlUuid, _>(order.as_uuid())
    .bind::<Text, _>(step.to.as_str())
    .bind::<Nullable<Text>, _>(step.provider_ref)
    .bind::<Nullable<Text>, _>(step.reason)
    .bind::<Text, _>(step.from.as_str())
    .get_result(conn)
    .await
    .optional()?;
    Ok(moved.map(|m| {
        let line = LedgerRow {
            kind: m.line_kind?,
            amount_minor: m.line_amount_minor?,
            currency: m.line_currency?,
            reason: m.line_reason,
            created_at: m.line_created_at?,
        };
        Some(Stored {
            row: m.payment,
            ledger: vec![line],
        })
    }))
}
