//! The order schema: appending events (and the projection with them), the
//! saga rows, reading both back.

use chrono::{DateTime, Utc};
use diesel::OptionalExtension as _;
use diesel::result::Error as DieselError;
use diesel::sql_types::{
    Array, Bool, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use kernel::{CallContext, OrderId};
use order_api::events::{OrderCancelled, OrderConfirmed, OrderFailed};

use crate::model::{OrderEvent, OrderState, TimelineEntry};

#[derive(diesel::QueryableByName)]
struct StateRow {
    #[diesel(sql_type = Jsonb)]
    state: serde_json::Value,
}

#[derive(diesel::QueryableByName)]
struct EventRow {
    #[diesel(sql_type = Integer)]
    seq: i32,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Jsonb)]
    data: serde_json::Value,
    #[diesel(sql_type = Timestamptz)]
    at: DateTime<Utc>,
}

/// Why an append did not happen.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The order's state does not allow the event.
    Refused(String),
    /// No such order.
    NotFound,
    /// The database failed.
    Db(DieselError),
}

impl From<DieselError> for AppendError {
    fn from(e: DieselError) -> AppendError {
        AppendError::Db(e)
    }
}

/// Now, to the microsecond the database keeps, so a state folded from
/// stored events equals the one written.
pub(crate) fn now() -> DateTime<Utc> {
    use chrono::SubsecRound as _;
    Utc::now().trunc_subsecs(6)
}

fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, DieselError> {
    serde_json::from_value(value).map_err(|e| DieselError::DeserializationError(Box::new(e)))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, DieselError> {
    serde_json::to_value(value).map_err(|e| DieselError::SerializationError(Box::new(e)))
}

/// The projected state of an order, locked for update when `lock`.
#[tracing::instrument(name = "order.repo.load_state", skip_all)]
pub(crate) async fn load_state(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    lock: bool,
) -> Result<Option<OrderState>, DieselError> {
    let sql = format!(
        "SELECT state FROM orders WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row: Option<StateRow> = db::sql(sql)
        .bind::<SqlUuid, _>(order.as_uuid())
        .get_result(conn)
        .await
        .optional()?;
    row.map(|r| decode(r.state)).transpose()
}

/// What an event says, as stored: its JSON without the `kind` tag (a column).
fn event_data(event: &OrderEvent) -> Result<serde_json::Value, DieselError> {
    let mut data = encode(event)?;
    if let Some(object) = data.as_object_mut() {
        object.remove("kind");
    }
    Ok(data)
}

async fn write_event(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    seq: i32,
    event: &OrderEvent,
    cx: &CallContext,
    at: DateTime<Utc>,
) -> Result<(), DieselError> {
    let data = event_data(event)?;
    db::sql(
        "INSERT INTO order_events (order_id, seq, kind, data, request_id, at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind::<SqlUuid, _>(order.as_uuid())
    .bind::<Integer, _>(seq)
    .bind::<Text, _>(event.kind())
    .bind::<Jsonb, _>(data)
    .bind::<Nullable<Text>, _>(Some(cx.request_id().to_string()))
    .bind::<Timestamptz, _>(at)
    .execute(conn)
    .await?;
    Ok(())
}

async fn write_state(conn: &mut AsyncPgConnection, state: &OrderState) -> Result<(), DieselError> {
    db::sql(
        "INSERT INTO orders (id, customer_id, version, state, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, \
         state = EXCLUDED.state, status = EXCLUDED.status, updated_at = EXCLUDED.updated_at",
    )
    .bind::<SqlUuid, _>(state.id.as_uuid())
    .bind::<SqlUuid, _>(state.customer_id)
    .bind::<Integer, _>(state.version)
    .bind::<Jsonb, _>(encode(state)?)
    .bind::<Text, _>(state.status.as_str())
    .bind::<Timestamptz, _>(state.created_at)
    .bind::<Timestamptz, _>(state.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records the first event of a new order and its projection. Call inside
/// a transaction.
#[tracing::instrument(name = "order.repo.create", skip_all)]
pub(crate) async fn create(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    event: &OrderEvent,
    cx: &CallContext,
) -> Result<OrderState, DieselError> {
    let at = now();
    let state = OrderState::start(order, event, at)
        .ok_or_else(|| DieselError::QueryBuilderError("the first event must be `placed`".into()))?;
    write_event(conn, order, 1, event, cx, at).await?;
    write_state(conn, &state).await?;
    Ok(state)
}

/// Appends `event` to the order's history and folds it into the projection,
/// with the integration event it announces (if any) in the outbox. Call
/// inside a transaction. Returns the new state, or the unchanged state when
/// the event was recorded already.
#[tracing::instrument(name = "order.repo.append", skip_all)]
pub(crate) async fn append(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    event: &OrderEvent,
    cx: &CallContext,
) -> Result<OrderState, AppendError> {
    let mut state = load_state(conn, order, true)
        .await?
        .ok_or(AppendError::NotFound)?;
    if !state.accepts(event).map_err(AppendError::Refused)? {
        return Ok(state);
    }
    fold_in(conn, &mut state, std::slice::from_ref(event), cx).await?;
    Ok(state)
}

/// Appends `events` in order, as [`append`] would one by one, under one
/// lock of the order and with one write of its projection. An event the
/// state refuses (a step another driver recorded meanwhile) is skipped
/// with a warning. Call inside a transaction; returns the new state.
#[tracing::instrument(name = "order.repo.append_all", skip_all)]
pub(crate) async fn append_all(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    events: &[OrderEvent],
    cx: &CallContext,
) -> Result<OrderState, AppendError> {
    let mut state = load_state(conn, order, true)
        .await?
        .ok_or(AppendError::NotFound)?;
    fold_in(conn, &mut state, events, cx).await?;
    Ok(state)
}

/// Folds the events `state` accepts into it, in order (a refused one is
/// skipped with a warning), writes them in one statement with their
/// announcements in the outbox, and the projection once.
async fn fold_in(
    conn: &mut AsyncPgConnection,
    state: &mut OrderState,
    events: &[OrderEvent],
    cx: &CallContext,
) -> Result<(), DieselError> {
    let (mut seqs, mut kinds, mut data, mut ats) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for event in events {
        match state.accepts(event) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(why) => {
                tracing::warn!(order.id = %state.id, kind = event.kind(), why = %why, "event not recorded");
                continue;
            }
        }
        let at = now();
        state.apply(event, at);
        seqs.push(state.version);
        kinds.push(event.kind());
        data.push(event_data(event)?);
        ats.push(at);
        announce(conn, state, event, cx).await?;
        metrics::counter!("order_events_total", "kind" => event.kind()).increment(1);
    }
    if seqs.is_empty() {
        return Ok(());
    }
    db::sql(
        "INSERT INTO order_events (order_id, seq, kind, data, request_id, at) \
         SELECT $1, e.seq, e.kind, e.data, $5, e.at \
         FROM unnest($2::int4[], $3::text[], $4::jsonb[], $6::timestamptz[]) AS e (seq, kind, data, at)",
    )
    .bind::<SqlUuid, _>(state.id.as_uuid())
    .bind::<Array<Integer>, _>(&seqs)
    .bind::<Array<Text>, _>(&kinds)
    .bind::<Array<Jsonb>, _>(&data)
    .bind::<Nullable<Text>, _>(Some(cx.request_id().to_string()))
    .bind::<Array<Timestamptz>, _>(&ats)
    .execute(conn)
    .await?;
    write_state(conn, state).await
}

async fn announce(
    conn: &mut AsyncPgConnection,
    state: &OrderState,
    event: &OrderEvent,
    cx: &CallContext,
) -> Result<(), DieselError> {
    let source = crate::NAME;
    match event {
        OrderEvent::Confirmed => {
            let items = state.lines.iter().map(|l| l.quantity).sum();
            let confirmed = OrderConfirmed {
                order_id: state.id,
                customer_id: state.customer_id,
                total: state.total,
                items,
            };
            events::outbox::publish(conn, source, cx, &confirmed).await?;
        }
        OrderEvent::Failed { reason } => {
            let failed = OrderFailed {
                order_id: state.id,
                customer_id: state.customer_id,
                reason: reason.clone(),
            };
            events::outbox::publish(conn, source, cx, &failed).await?;
        }
        OrderEvent::Cancelled { reason } => {
            let cancelled = OrderCancelled {
                order_id: state.id,
                customer_id: state.customer_id,
                reason: reason.clone(),
            };
            events::outbox::publish(conn, source, cx, &cancelled).await?;
        }
        _ => {}
    }
    Ok(())
}

/// The order's history, oldest first.
#[tracing::instrument(name = "order.repo.timeline", skip_all)]
pub(crate) async fn timeline(
    conn: &mut AsyncPgConnection,
    order: OrderId,
) -> Result<Vec<TimelineEntry>, DieselError> {
    let rows: Vec<EventRow> =
        db::sql("SELECT seq, kind, data, at FROM order_events WHERE order_id = $1 ORDER BY seq")
            .bind::<SqlUuid, _>(order.as_uuid())
            .load(conn)
            .await?;
    Ok(rows
        .into_iter()
        .map(|r| TimelineEntry {
            seq: r.seq,
            kind: r.kind,
            data: r.data,
            at: r.at,
        })
        .collect())
}

/// The state of an order folded from its events alone (the projection is
/// not read).
#[tracing::instrument(name = "order.repo.fold", skip_all)]
pub(crate) async fn fold(
    conn: &mut AsyncPgConnection,
    order: OrderId,
) -> Result<Option<OrderState>, DieselError> {
    let mut state: Option<OrderState> = None;
    for entry in timeline(conn, order).await? {
        let mut tagged = entry.data;
        if let Some(object) = tagged.as_object_mut() {
            object.insert("kind".into(), serde_json::Value::String(entry.kind));
        }
        let event: OrderEvent = decode(tagged)?;
        match &mut state {
            None => state = OrderState::start(order, &event, entry.at),
            Some(state) => state.apply(&event, entry.at),
        }
    }
    Ok(state)
}

/// Rewrites the projection of `order` from its events.
#[tracing::instrument(name = "order.repo.rebuild", skip_all)]
pub(crate) async fn rebuild(
    conn: &mut AsyncPgConnection,
    order: OrderId,
) -> Result<Option<OrderState>, DieselError> {
    let state = fold(conn, order).await?;
    if let Some(state) = &state {
        write_state(conn, state).await?;
    }
    Ok(state)
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
pub(crate) async fn load_saga(
    conn: &mut AsyncPgConnection,
    order: OrderId,
    lock: bool,
) -> Result<SagaRow, DieselError> {
    db::sql(format!(
        "SELECT direction, outcome, reason, payment_method, card_last4, reserve_attempted, \
         payment_attempted, request_id, done, attempts, step FROM sagas WHERE order_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    ))
    .bind::<SqlUuid, _>(order.as_uuid())
    .get_result(conn)
    .await
}
