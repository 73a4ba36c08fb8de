//! The `sagas` table: one row per order, the checkout saga's direction,
//! flags, attempts and lease. Each function is one statement; the saga
//! (`crate::saga`) decides when to run them. Diesel's query builder where it
//! can say the statement; the raw ones say why beside them.

use std::time::Duration;

use diesel::dsl::now;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Double, Integer, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use kernel::OrderId;
use uuid::Uuid;

// The columns the query builder's statements use (diesel's tables hold
// 16 at most without a heavier build).
diesel::table! {
    orders.sagas (order_id) {
        order_id -> Uuid,
        direction -> Text,
        outcome -> Nullable<Text>,
        reason -> Nullable<Text>,
        reserve_attempted -> Bool,
        payment_attempted -> Bool,
        step -> Nullable<Text>,
        done -> Bool,
        attempts -> Integer,
        next_attempt_at -> Timestamptz,
        last_error -> Nullable<Text>,
        lease_owner -> Nullable<Uuid>,
        lease_until -> Nullable<Timestamptz>,
        updated_at -> Timestamptz,
    }
}

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
    // Raw: `SagaRow` reads `direction` and `outcome` into enums by name
    // (`QueryableByName`), shared with the statements below that return it.
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
/// begun and leased by `owner` for `lease_secs`, as [`begin`] would, and
/// both flags set: from now on a reservation or a payment may exist, so
/// compensation asks both modules to undo theirs (each answers "none" if
/// it was never asked).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert(
    mut conn: &AsyncPgConnection,
    order: OrderId,
    payment_method: &str,
    card_last4: &str,
    request_id: &str,
    owner: Uuid,
    lease_secs: u64,
) -> QueryResult<()> {
    // Raw: the lease ends `now() + interval` on the database's clock, which
    // the query builder has no `timestamptz` arithmetic for.
    db::sql(format!(
        "INSERT INTO sagas (order_id, direction, payment_method, card_last4, request_id, \
         lease_owner, lease_until, step, reserve_attempted, payment_attempted) \
         VALUES ($1, 'forward', $2, $3, $4, $5, now() + interval '{lease_secs} seconds', 'reserve', true, true)"
    ))
    .bind::<SqlUuid, _>(order.as_uuid())
    .bind::<Text, _>(payment_method)
    .bind::<Text, _>(card_last4)
    .bind::<Text, _>(request_id)
    .bind::<SqlUuid, _>(owner)
    .execute(&mut conn)
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
    // Raw: the lease's end on the database's clock (see `insert`).
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

/// Gives `owner`'s lease up until a retry `wait` from now, with its
/// `error`, counting the attempt when `counted` (a step refused the
/// shop's own identity is not: it never gives the step up).
pub(crate) async fn unlease(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    owner: Uuid,
    wait: Duration,
    error: &str,
    counted: bool,
) -> QueryResult<()> {
    // Raw: the next attempt's time on the database's clock (see `insert`).
    db::sql(
        "UPDATE sagas SET lease_owner = NULL, lease_until = NULL, \
         attempts = attempts + CASE WHEN $5 THEN 1 ELSE 0 END, \
         last_error = $3, next_attempt_at = now() + make_interval(secs => $4), updated_at = now() \
         WHERE order_id = $1 AND lease_owner = $2",
    )
    .bind::<SqlUuid, _>(order.as_uuid())
    .bind::<SqlUuid, _>(owner)
    .bind::<Text, _>(error)
    .bind::<Double, _>(wait.as_secs_f64())
    .bind::<diesel::sql_types::Bool, _>(counted)
    .execute(conn)
    .await
    .map(drop)
}

/// Gives `owner`'s lease up, due at once, counting no attempt: the run
/// stopped with its process, nothing failed.
pub(crate) async fn release(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    owner: Uuid,
) -> QueryResult<()> {
    db::sql(
        "UPDATE sagas SET lease_owner = NULL, lease_until = NULL, next_attempt_at = now(), \
         updated_at = now() WHERE order_id = $1 AND lease_owner = $2",
    )
    .bind::<SqlUuid, _>(order.as_uuid())
    .bind::<SqlUuid, _>(owner)
    .execute(conn)
    .await
    .map(drop)
}

/// Records the intent of step `step`, renewing `owner`'s lease; false when
/// the lease is no longer `owner`'s.
pub(crate) async fn begin(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    owner: Uuid,
    step: &str,
    lease_secs: u64,
) -> QueryResult<bool> {
    // Raw: the lease's end on the database's clock (see `insert`).
    let updated = db::sql(format!(
        "UPDATE sagas SET step = $3, lease_until = now() + interval '{lease_secs} seconds', updated_at = now() \
         WHERE order_id = $1 AND lease_owner = $2"
    ))
    .bind::<SqlUuid, _>(order.as_uuid())
    .bind::<SqlUuid, _>(owner)
    .bind::<Text, _>(step)
    .execute(conn)
    .await?;
    Ok(updated == 1)
}

/// After steps' results are recorded: clears the attempts and, if `owner`
/// still holds the lease, records the intent of the `next` step and renews
/// the lease. Whether the lease is still `owner`'s.
pub(crate) async fn recorded(
    mut conn: &AsyncPgConnection,
    order: OrderId,
    owner: Uuid,
    next: Option<&str>,
    lease_secs: u64,
) -> QueryResult<bool> {
    #[derive(diesel::QueryableByName)]
    struct Ours {
        #[diesel(sql_type = Bool)]
        ours: bool,
    }
    // Raw: each column set only while the lease is ours (`CASE`), and
    // whether it is, returned by the same statement.
    let row: Ours = db::sql(format!(
        "UPDATE sagas SET attempts = 0, last_error = NULL, updated_at = now(), \
         step = CASE WHEN lease_owner = $2 THEN $3 ELSE step END, \
         lease_until = CASE WHEN lease_owner = $2 THEN now() + interval '{lease_secs} seconds' ELSE lease_until END \
         WHERE order_id = $1 RETURNING lease_owner IS NOT DISTINCT FROM $2 AS ours"
    ))
    .bind::<SqlUuid, _>(order.as_uuid())
    .bind::<SqlUuid, _>(owner)
    .bind::<Nullable<Text>, _>(next)
    .get_result(&mut conn)
    .await?;
    Ok(row.ours)
}

/// Whether the saga of `order` was turned back (a cancel, made on any
/// instance): read before the capture, the one step that moves a
/// customer's money, so that a cancel made on another instance while the
/// checkout ran voids the hold rather than charge and refund it.
pub(crate) async fn turned_back(conn: &mut AsyncPgConnection, order: OrderId) -> QueryResult<bool> {
    db::cached(
        sagas::table
            .find(order.as_uuid())
            .select(sagas::direction.eq("compensate")),
    )
    .get_result(conn)
    .await
}

/// Turns a forward saga back, if `owner` still holds its lease: it
/// compensates, and the order fails with `reason`. Whether the lease is
/// still `owner`'s (a run that lost it must not fail an order another run
/// is completing); a saga a cancel turned already is left as the cancel
/// made it.
pub(crate) async fn turn_back(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    owner: uuid::Uuid,
    reason: &str,
) -> QueryResult<bool> {
    let turned = db::cached(
        diesel::update(sagas::table.find(order.as_uuid()))
            .filter(sagas::direction.eq(Direction::Forward.as_str()))
            .filter(sagas::lease_owner.eq(owner))
            .set((
                sagas::direction.eq(Direction::Compensate.as_str()),
                sagas::outcome.eq("failed"),
                sagas::reason.eq(reason),
                sagas::attempts.eq(0),
                sagas::updated_at.eq(now),
            )),
    )
    .execute(conn)
    .await?;
    if turned == 1 {
        return Ok(true);
    }
    let holder: Option<uuid::Uuid> = sagas::table
        .find(order.as_uuid())
        .select(sagas::lease_owner)
        .first(conn)
        .await?;
    Ok(holder == Some(owner))
}

/// Turns a saga back because the order is cancelled, due at once.
pub(crate) async fn cancel(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    reason: &str,
) -> QueryResult<()> {
    db::cached(diesel::update(sagas::table.find(order.as_uuid())).set((
        sagas::direction.eq(Direction::Compensate.as_str()),
        sagas::outcome.eq("cancelled"),
        sagas::reason.eq(reason),
        sagas::done.eq(false),
        sagas::attempts.eq(0),
        sagas::next_attempt_at.eq(now),
        sagas::updated_at.eq(now),
    )))
    .execute(conn)
    .await
    .map(drop)
}

/// Marks a saga still running in `direction` done, its lease cleared;
/// its outcome and reason, or `None` when it was done already or runs the
/// other way (then nothing changed).
pub(crate) async fn mark_done(
    mut conn: &AsyncPgConnection,
    order: OrderId,
    direction: Direction,
) -> QueryResult<Option<(Option<SagaOutcome>, Option<String>)>> {
    db::cached(
        diesel::update(
            sagas::table
                .find(order.as_uuid())
                .filter(sagas::done.eq(false))
                .filter(sagas::direction.eq(direction.as_str())),
        )
        .set((
            sagas::done.eq(true),
            sagas::step.eq(None::<String>),
            sagas::last_error.eq(None::<String>),
            sagas::lease_owner.eq(None::<Uuid>),
            sagas::lease_until.eq(None::<chrono::DateTime<chrono::Utc>>),
            sagas::updated_at.eq(now),
        ))
        .returning((sagas::outcome, sagas::reason)),
    )
    .get_result(&mut conn)
    .await
    .optional()
}

/// Up to 32 sagas due and not leased (their owner died, or they wait for a
/// retry), the longest waiting first. `NOT done` in the text, not a bound
/// `false`: the statement is prepared once and may run on a generic plan,
/// which can use the partial index on sagas not done only if its
/// predicate is written out.
pub(crate) async fn due(conn: &mut AsyncPgConnection) -> QueryResult<Vec<OrderId>> {
    let due: Vec<Uuid> = sagas::table
        .filter(diesel::dsl::not(sagas::done))
        .filter(sagas::next_attempt_at.le(now))
        .filter(sagas::lease_until.is_null().or(sagas::lease_until.lt(now)))
        .order(sagas::next_attempt_at)
        .limit(32)
        .select(sagas::order_id)
        .load(conn)
        .await?;
    Ok(due.into_iter().map(OrderId::from).collect())
}

/// How many sagas are not done, and how long the oldest of them has been
/// running, seconds (0 when none).
pub(crate) async fn in_flight(conn: &mut AsyncPgConnection) -> QueryResult<(i64, f64)> {
    #[derive(diesel::QueryableByName)]
    struct InFlight {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        running: i64,
        #[diesel(sql_type = Double)]
        oldest: f64,
    }
    // Raw: aggregates and an age on the database's clock in one statement
    // (the scan uses the partial index on sagas not done).
    let row: InFlight = db::sql(
        "SELECT count(*) AS running, \
                COALESCE(EXTRACT(EPOCH FROM now() - min(started_at)), 0)::float8 AS oldest \
         FROM sagas WHERE NOT done",
    )
    .get_result(conn)
    .await?;
    Ok((row.running, row.oldest))
}
