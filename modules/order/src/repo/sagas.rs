//! The `sagas` table: one row per order, the checkout saga's direction,
//! flags, attempts and lease. Each function is one statement; the saga
//! (`crate::saga`) decides when to run them.

use std::time::Duration;

use diesel::QueryResult;
use diesel::sql_types::{Bool, Double, Integer, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use kernel::OrderId;
use uuid::Uuid;

/// Which way a saga runs: on towards confirmation, or back, undoing what
/// was done (column `sagas.direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, diesel::deserialize::FromSqlRow)]
pub(crate) enum Direction {
    /// Reserve, authorize, commit, capture, confirm.
    Forward,
    /// Refund or void, give the stock back, then fail or cancel.
    Compensate,
}

/// How a saga that turned back ends (column `sagas.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, diesel::deserialize::FromSqlRow)]
pub(crate) enum SagaOutcome {
    /// A step failed: the order fails.
    Failed,
    /// The customer cancelled: the order is cancelled.
    Cancelled,
}

impl Direction {
    /// The name in the `sagas` table and in logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Direction::Forward => "forward",
            Direction::Compensate => "compensate",
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads a text column into one of `variants`, by name.
fn from_text<T: Copy>(
    bytes: diesel::pg::PgValue<'_>,
    variants: &[(&str, T)],
) -> diesel::deserialize::Result<T> {
    let text = <String as diesel::deserialize::FromSql<Text, diesel::pg::Pg>>::from_sql(bytes)?;
    variants
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, value)| *value)
        .ok_or_else(|| format!("unexpected value {text:?}").into())
}

impl diesel::deserialize::FromSql<Text, diesel::pg::Pg> for Direction {
    fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
        from_text(
            bytes,
            &[
                ("forward", Direction::Forward),
                ("compensate", Direction::Compensate),
            ],
        )
    }
}

impl diesel::deserialize::FromSql<Text, diesel::pg::Pg> for SagaOutcome {
    fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
        from_text(
            bytes,
            &[
                ("failed", SagaOutcome::Failed),
                ("cancelled", SagaOutcome::Cancelled),
            ],
        )
    }
}

/// A saga row.
#[derive(Debug, Clone, diesel::QueryableByName)]
pub(crate) struct SagaRow {
    #[diesel(sql_type = Text)]
    pub(crate) direction: Direction,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) outcome: Option<SagaOutcome>,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) reason: Option<String>,
    #[diesel(sql_type = Text)]
    pub(crate) payment_method: String,
    #[diesel(sql_type = Text)]
    pub(crate) card_last4: String,
    #[diesel(sql_type = Bool)]
    pub(crate) reserve_attempted: bool,
    #[diesel(sql_type = Bool)]
    pub(crate) payment_attempted: bool,
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) request_id: Option<String>,
    #[diesel(sql_type = Bool)]
    pub(crate) done: bool,
    #[diesel(sql_type = Integer)]
    pub(crate) attempts: i32,
    /// The step whose intent is recorded (about to run, or running).
    #[diesel(sql_type = Nullable<Text>)]
    pub(crate) step: Option<String>,
}

/// The saga of an order.
#[tracing::instrument(name = "order.repo.load_saga", skip_all)]
pub(crate) async fn load(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    lock: bool,
) -> QueryResult<SagaRow> {
    db::sql(format!(
        "SELECT direction, outcome, reason, payment_method, card_last4, reserve_attempted, \
         payment_attempted, request_id, done, attempts, step FROM sagas WHERE order_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    ))
    .bind::<SqlUuid, _>(order.as_uuid())
    .get_result(conn)
    .await
}

/// Opens the saga of a new order, forward, with its first step (reserve)
/// begun and leased by `owner` for `lease_secs`, as [`begin`] would.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    payment_method: &str,
    card_last4: &str,
    request_id: &str,
    owner: Uuid,
    lease_secs: u64,
) -> QueryResult<()> {
    db::sql(format!(
        "INSERT INTO sagas (order_id, direction, payment_method, card_last4, request_id, \
         lease_owner, lease_until, step, reserve_attempted) \
         VALUES ($1, 'forward', $2, $3, $4, $5, now() + interval '{lease_secs} seconds', 'reserve', true)"
    ))
    .bind::<SqlUuid, _>(order.as_uuid())
    .bind::<Text, _>(payment_method)
    .bind::<Text, _>(card_last4)
    .bind::<Text, _>(request_id)
    .bind::<SqlUuid, _>(owner)
    .execute(conn)
    .await
    .map(drop)
}

/// Takes (or renews) the lease of a saga still running for `owner`, for
/// `lease_secs`; false when another owner holds it.
pub(crate) async fn lease(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    owner: Uuid,
    lease_secs: u64,
) -> QueryResult<bool> {
    let taken = db::sql(format!(
        "UPDATE sagas SET lease_owner = $2, lease_until = now() + interval '{lease_secs} seconds' \
         WHERE order_id = $1 AND NOT done AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until < now())"
    ))
    .bind::<SqlUuid, _>(order.as_uuid())
    .bind::<SqlUuid, _>(owner)
    .execute(conn)
    .await?;
    Ok(taken == 1)
}

/// Gives `owner`'s lease up until a retry `wait` from now, counting the
/// attempt and its `error`.
pub(crate) async fn unlease(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    owner: Uuid,
    wait: Duration,
    error: &str,
) -> QueryResult<()> {
    db::sql(
        "UPDATE sagas SET lease_owner = NULL, lease_until = NULL, attempts = attempts + 1, \
         last_error = $3, next_attempt_at = now() + make_interval(secs => $4), updated_at = now() \
         WHERE order_id = $1 AND lease_owner = $2",
    )
    .bind::<SqlUuid, _>(order.as_uuid())
    .bind::<SqlUuid, _>(owner)
    .bind::<Text, _>(error)
    .bind::<Double, _>(wait.as_secs_f64())
    .execute(conn)
    .await
    .map(drop)
}

/// Records the intent of step `step` (and sets its `flag` column), renewing
/// `owner`'s lease; false when the lease is no longer `owner`'s.
pub(crate) async fn begin(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    owner: Uuid,
    step: &str,
    flag: Option<&str>,
    lease_secs: u64,
) -> QueryResult<bool> {
    let updated = db::sql(format!(
        "UPDATE sagas SET step = $3{}, lease_until = now() + interval '{lease_secs} seconds', updated_at = now() \
         WHERE order_id = $1 AND lease_owner = $2",
        flag.map_or(String::new(), |column| format!(", {column} = true")),
    ))
    .bind::<SqlUuid, _>(order.as_uuid())
    .bind::<SqlUuid, _>(owner)
    .bind::<Text, _>(step)
    .execute(conn)
    .await?;
    Ok(updated == 1)
}

/// After steps' results are recorded: clears the attempts and, if `owner`
/// still holds the lease, records the intent of the `next` step (and its
/// `flag`) and renews the lease. Whether the lease is still `owner`'s.
pub(crate) async fn recorded(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    owner: Uuid,
    next: Option<&str>,
    flag: Option<&str>,
    lease_secs: u64,
) -> QueryResult<bool> {
    #[derive(diesel::QueryableByName)]
    struct Ours {
        #[diesel(sql_type = Bool)]
        ours: bool,
    }
    let row: Ours = db::sql(format!(
        "UPDATE sagas SET attempts = 0, last_error = NULL, updated_at = now(), \
         step = CASE WHEN lease_owner = $2 THEN $3 ELSE step END{}, \
         lease_until = CASE WHEN lease_owner = $2 THEN now() + interval '{lease_secs} seconds' ELSE lease_until END \
         WHERE order_id = $1 RETURNING lease_owner IS NOT DISTINCT FROM $2 AS ours",
        flag.map_or(String::new(), |column| format!(
            ", {column} = {column} OR lease_owner IS NOT DISTINCT FROM $2"
        )),
    ))
    .bind::<SqlUuid, _>(order.as_uuid())
    .bind::<SqlUuid, _>(owner)
    .bind::<Nullable<Text>, _>(next)
    .get_result(conn)
    .await?;
    Ok(row.ours)
}

/// Turns a forward saga back: it compensates, and the order fails with
/// `reason`.
pub(crate) async fn turn_back(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    reason: &str,
) -> QueryResult<()> {
    db::sql(
        "UPDATE sagas SET direction = 'compensate', outcome = 'failed', reason = $2, attempts = 0, \
         updated_at = now() WHERE order_id = $1 AND direction = 'forward'",
    )
    .bind::<SqlUuid, _>(order.as_uuid())
    .bind::<Text, _>(reason)
    .execute(conn)
    .await
    .map(drop)
}

/// Turns a saga back because the order is cancelled, due at once.
pub(crate) async fn cancel(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    reason: &str,
) -> QueryResult<()> {
    db::sql(
        "UPDATE sagas SET direction = 'compensate', outcome = 'cancelled', reason = $2, \
         done = false, attempts = 0, next_attempt_at = now(), updated_at = now() WHERE order_id = $1",
    )
    .bind::<SqlUuid, _>(order.as_uuid())
    .bind::<Text, _>(reason)
    .execute(conn)
    .await
    .map(drop)
}

/// Marks a saga done, its lease cleared.
pub(crate) async fn mark_done(conn: &mut AsyncPgConnection, order: OrderId) -> QueryResult<()> {
    db::sql(
        "UPDATE sagas SET done = true, step = NULL, last_error = NULL, lease_owner = NULL, \
         lease_until = NULL, updated_at = now() WHERE order_id = $1",
    )
    .bind::<SqlUuid, _>(order.as_uuid())
    .execute(conn)
    .await
    .map(drop)
}

/// Up to 32 sagas due and not leased (their owner died, or they wait for a
/// retry), the longest waiting first.
pub(crate) async fn due(conn: &mut AsyncPgConnection) -> QueryResult<Vec<OrderId>> {
    #[derive(diesel::QueryableByName)]
    struct Due {
        #[diesel(sql_type = SqlUuid)]
        order_id: Uuid,
    }
    let due: Vec<Due> = db::sql(
        "SELECT order_id FROM sagas WHERE NOT done AND next_attempt_at <= now() \
         AND (lease_until IS NULL OR lease_until < now()) ORDER BY next_attempt_at LIMIT 32",
    )
    .load(conn)
    .await?;
    Ok(due.into_iter().map(|d| OrderId::from(d.order_id)).collect())
}
