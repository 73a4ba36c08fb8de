//! The event store: `order_events`, the append-only truth, and `orders`,
//! its projection, written together; reading, folding and rebuilding them.
//! Diesel's query builder, but for the batch append (`fold_in`: its reason
//! is beside it).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{Array, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use kernel::{CallContext, OrderId};
use order_api::events::{OrderCancelled, OrderConfirmed, OrderFailed};

use crate::domain::{OrderEvent, OrderState};
use crate::model::TimelineEntry;

diesel::table! {
    orders.orders (id) {
        id -> Uuid,
        customer_id -> Uuid,
        version -> Integer,
        state -> Jsonb,
        status -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    orders.order_events (order_id, seq) {
        order_id -> Uuid,
        seq -> Integer,
        kind -> Text,
        data -> Jsonb,
        request_id -> Nullable<Text>,
        at -> Timestamptz,
    }
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
    let query = orders::table.find(order.as_uuid()).select(orders::state);
    let state: Option<serde_json::Value> = if lock {
        query.for_update().first(conn).await.optional()?
    } else {
        query.first(conn).await.optional()?
    };
    state.map(decode).transpose()
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
    mut conn: &AsyncPgConnection,
    order: OrderId,
    seq: i32,
    event: &OrderEvent,
    cx: &CallContext,
    at: DateTime<Utc>,
) -> Result<(), DieselError> {
    diesel::insert_into(order_events::table)
        .values((
            order_events::order_id.eq(order.as_uuid()),
            order_events::seq.eq(seq),
            order_events::kind.eq(event.kind()),
            order_events::data.eq(event_data(event)?),
            order_events::request_id.eq(cx.request_id().to_string()),
            order_events::at.eq(at),
        ))
        .execute(&mut conn)
        .await
        .map(drop)
}

async fn write_state(mut conn: &AsyncPgConnection, state: &OrderState) -> Result<(), DieselError> {
    db::cached(
        diesel::insert_into(orders::table)
            .values((
                orders::id.eq(state.order.id.as_uuid()),
                orders::customer_id.eq(state.order.customer_id),
                orders::version.eq(state.version),
                orders::state.eq(encode(state)?),
                orders::status.eq(state.order.status.as_str()),
                orders::created_at.eq(state.order.created_at),
                orders::updated_at.eq(state.order.updated_at),
            ))
            .on_conflict(orders::id)
            .do_update()
            .set((
                orders::version.eq(excluded(orders::version)),
                orders::state.eq(excluded(orders::state)),
                orders::status.eq(excluded(orders::status)),
                orders::updated_at.eq(excluded(orders::updated_at)),
            )),
    )
    .execute(&mut conn)
    .await
    .map(drop)
}

/// Records the first event of a new order and its projection, pipelined
/// (one round trip, ADR 0015). Call inside a transaction.
#[tracing::instrument(name = "order.repo.create", skip_all)]
pub(crate) async fn create(
    conn: &AsyncPgConnection,
    order: OrderId,
    event: &OrderEvent,
    cx: &CallContext,
) -> Result<OrderState, DieselError> {
    let at = now();
    let state = OrderState::start(order, event, at)
        .ok_or_else(|| DieselError::QueryBuilderError("the first event must be `placed`".into()))?;
    let (event_written, state_written) = futures_util::future::join(
        write_event(conn, order, 1, event, cx, at),
        write_state(conn, &state),
    )
    .await;
    event_written?;
    state_written?;
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

/// How [`append_known`] went.
pub(crate) enum Appended {
    /// Appended: the new state.
    Done(OrderState),
    /// The order moved on since the state known (or accepted none of the
    /// events from it): roll back and [`append_all`] under the lock.
    Stale,
}

/// [`append_all`] from `known`, the order's state as this caller last read
/// or wrote it, without reading or locking it again: the events take the
/// sequence numbers after `known.version`, so if anyone appended meanwhile
/// the INSERT collides with their events on the key of `order_events` (or
/// waits for their transaction, then collides), and the answer is
/// [`Appended::Stale`]. Then the transaction is void: the caller rolls it
/// back. A state ahead of what is recorded must never be given.
#[tracing::instrument(name = "order.repo.append_known", skip_all)]
pub(crate) async fn append_known(
    conn: &AsyncPgConnection,
    known: &OrderState,
    events: &[OrderEvent],
    cx: &CallContext,
) -> Result<Appended, DieselError> {
    let mut state = known.clone();
    let Some(writes) = fold_into(&mut state, events, cx)? else {
        return Ok(Appended::Stale);
    };
    match writes.write(conn, &state).await {
        Ok(()) => Ok(Appended::Done(state)),
        Err(e) if collided(&e) => Ok(Appended::Stale),
        Err(e) => Err(e),
    }
}

/// Whether a write of [`Writes`] failed because the order moved on since
/// the state it was folded into (its events collide on `order_events`' key).
pub(crate) fn collided(error: &DieselError) -> bool {
    matches!(
        error,
        DieselError::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, info)
            if info.constraint_name() == Some("order_events_pkey")
    )
}

/// What appending events writes: the events, the projection once and the
/// events' announcements in the outbox.
pub(crate) struct Writes<'a> {
    seqs: Vec<i32>,
    kinds: Vec<&'static str>,
    data: Vec<serde_json::Value>,
    ats: Vec<DateTime<Utc>>,
    announcements: events::outbox::Batch<'a>,
    request_id: String,
}

/// Folds the events `state` accepts into it, in order (a refused one is
/// skipped with a warning), writing nothing yet: what to write, or `None`
/// when it accepted none of them.
pub(crate) fn fold_into<'a>(
    state: &mut OrderState,
    events: &[OrderEvent],
    cx: &'a CallContext,
) -> Result<Option<Writes<'a>>, DieselError> {
    let mut writes = Writes {
        seqs: Vec::new(),
        kinds: Vec::new(),
        data: Vec::new(),
        ats: Vec::new(),
        announcements: events::outbox::Batch::new(crate::NAME, cx),
        request_id: cx.request_id().to_string(),
    };
    for event in events {
        match state.accepts(event) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(why) => {
                tracing::warn!(order.id = %state.order.id, kind = event.kind(), why = %why, "event not recorded");
                continue;
            }
        }
        let at = now();
        state.apply(event, at);
        writes.seqs.push(state.version);
        writes.kinds.push(event.kind());
        writes.data.push(event_data(event)?);
        writes.ats.push(at);
        announce(&mut writes.announcements, state, event)?;
        metrics::counter!("order_events_total", "kind" => event.kind()).increment(1);
    }
    Ok((!writes.seqs.is_empty()).then_some(writes))
}

impl Writes<'_> {
    /// Writes the events in one statement, `state` (the state they were
    /// folded into) as the projection and the announcements: three
    /// statements pipelined (one round trip, ADR 0015), the first failure
    /// in their order answered (a collision on `order_events`' key, see
    /// [`collided`], before the aborted rest).
    pub(crate) async fn write(
        self,
        mut conn: &AsyncPgConnection,
        state: &OrderState,
    ) -> Result<(), DieselError> {
        // Raw: every event in one INSERT from `unnest` arrays, which the
        // query builder has no form for (a batch insert of N rows is N
        // statements' worth of parameters and a new statement per N).
        let inserted = db::sql(
            "INSERT INTO order_events (order_id, seq, kind, data, request_id, at) \
             SELECT $1, e.seq, e.kind, e.data, $5, e.at \
             FROM unnest($2::int4[], $3::text[], $4::jsonb[], $6::timestamptz[]) AS e (seq, kind, data, at)",
        )
        .bind::<SqlUuid, _>(state.order.id.as_uuid())
        .bind::<Array<Integer>, _>(&self.seqs)
        .bind::<Array<Text>, _>(&self.kinds)
        .bind::<Array<Jsonb>, _>(&self.data)
        .bind::<Nullable<Text>, _>(Some(&self.request_id))
        .bind::<Array<Timestamptz>, _>(&self.ats)
        .execute(&mut conn);
        let (inserted, projected, announced) = futures_util::future::join3(
            inserted,
            write_state(conn, state),
            self.announcements.write(conn),
        )
        .await;
        inserted?;
        projected?;
        announced
    }
}

/// Folds the events `state` accepts into it and writes them
/// ([`fold_into`], [`Writes::write`]).
async fn fold_in(
    conn: &AsyncPgConnection,
    state: &mut OrderState,
    events: &[OrderEvent],
    cx: &CallContext,
) -> Result<(), DieselError> {
    match fold_into(state, events, cx)? {
        Some(writes) => writes.write(conn, state).await,
        None => Ok(()),
    }
}

/// Adds the integration event `event` announces, if any, to `batch`.
fn announce(
    batch: &mut events::outbox::Batch<'_>,
    state: &OrderState,
    event: &OrderEvent,
) -> Result<(), DieselError> {
    match event {
        OrderEvent::Confirmed => {
            let items = state.order.lines.iter().map(|l| l.quantity).sum();
            let confirmed = OrderConfirmed {
                order_id: state.order.id,
                customer_id: state.order.customer_id,
                total: state.order.total,
                items,
            };
            batch.push(&confirmed)?;
        }
        OrderEvent::Failed { reason } => {
            let failed = OrderFailed {
                order_id: state.order.id,
                customer_id: state.order.customer_id,
                reason: reason.clone(),
            };
            batch.push(&failed)?;
        }
        OrderEvent::Cancelled { reason } => {
            let cancelled = OrderCancelled {
                order_id: state.order.id,
                customer_id: state.order.customer_id,
                reason: reason.clone(),
            };
            batch.push(&cancelled)?;
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
    let rows: Vec<(i32, String, serde_json::Value, DateTime<Utc>)> = order_events::table
        .filter(order_events::order_id.eq(order.as_uuid()))
        .order(order_events::seq)
        .select((
            order_events::seq,
            order_events::kind,
            order_events::data,
            order_events::at,
        ))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(seq, kind, data, at)| TimelineEntry {
            seq,
            kind,
            data,
            at,
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

/// Up to `limit` of `customer`'s orders, newest first, older than `after`.
pub(crate) async fn customer_orders(
    conn: &mut AsyncPgConnection,
    customer: uuid::Uuid,
    after: Option<uuid::Uuid>,
    limit: i64,
) -> Result<Vec<OrderState>, DieselError> {
    let mut query = orders::table
        .filter(orders::customer_id.eq(customer))
        .select(orders::state)
        .order(orders::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(orders::id.lt(after));
    }
    let states: Vec<serde_json::Value> = query.load(conn).await?;
    states.into_iter().map(decode).collect()
}

/// Every order with events.
pub(crate) async fn order_ids(conn: &mut AsyncPgConnection) -> Result<Vec<OrderId>, DieselError> {
    let ids: Vec<uuid::Uuid> = order_events::table
        .select(order_events::order_id)
        .distinct()
        .load(conn)
        .await?;
    Ok(ids.into_iter().map(OrderId::from).collect())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use diesel_async::AsyncConnection as _;
    use kernel::{Currency, Money, RequestId};
    use uuid::Uuid;

    use super::*;
    use crate::model::OrderLine;

    /// An append from a state someone has appended after collides with
    /// their event and writes nothing; under the lock it goes on from the
    /// recorded state, and from the state it returns, known appends go on.
    #[tokio::test]
    async fn an_append_from_a_stale_state_collides_and_one_under_the_lock_goes_on() {
        let db = testkit::TestDatabase::create(&[crate::MODULE_MIGRATIONS]).await;
        let pool = db::build_pool(&db::PoolOptions {
            url: db.url().to_owned(),
            schema: "orders",
            max_size: 2,
            runtimes: 1,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        })
        .unwrap();
        let mut conn = db::connection(&pool, crate::NAME).await.unwrap();
        let cx = CallContext::for_request(RequestId::generate());
        let order = OrderId::generate();
        let price = Money::new(500, Currency::EUR);
        let placed = OrderEvent::Placed {
            customer_id: Uuid::now_v7(),
            lines: vec![OrderLine {
                product_id: catalog_api::ProductId::from(Uuid::now_v7()),
                sku: catalog_api::Sku::parse("STALE-1").unwrap(),
                name: "Mug".into(),
                unit_price: price,
                quantity: 1,
                line_total: price,
            }],
            total: price,
            card_last4: "4242".into(),
        };
        let known = conn
            .transaction::<_, DieselError, _>(async |c| create(c, order, &placed, &cx).await)
            .await
            .unwrap();
        // Someone else appends (a cancel, say).
        let cancel = OrderEvent::CancellationRequested {
            reason: "by the test".into(),
        };
        conn.transaction::<_, AppendError, _>(async |c| append(c, order, &cancel, &cx).await)
            .await
            .unwrap();

        // From the state known before it: stale, and nothing is written.
        let stale = conn
            .transaction::<_, DieselError, _>(async |c| {
                match append_known(c, &known, &[OrderEvent::StockReserved], &cx).await? {
                    Appended::Stale => Err(DieselError::RollbackTransaction),
                    Appended::Done(_) => Ok(()),
                }
            })
            .await;
        assert!(
            matches!(stale, Err(DieselError::RollbackTransaction)),
            "{stale:?}"
        );
        let kinds = |timeline: Vec<TimelineEntry>| -> Vec<String> {
            timeline.into_iter().map(|e| e.kind).collect()
        };
        assert_eq!(
            kinds(timeline(&mut conn, order).await.unwrap()),
            ["placed", "cancellation_requested"]
        );

        // Under the lock, from what is recorded.
        let locked = conn
            .transaction::<_, AppendError, _>(async |c| {
                append_all(c, order, &[OrderEvent::StockReserved], &cx).await
            })
            .await
            .unwrap();
        assert_eq!(locked.version, 3);
        // From the state it returned, without reading it again.
        let next = conn
            .transaction::<_, DieselError, _>(async |c| {
                append_known(c, &locked, &[OrderEvent::StockReleased], &cx).await
            })
            .await
            .unwrap();
        let Appended::Done(state) = next else {
            panic!("the state written last is not stale");
        };
        assert_eq!(state.version, 4);
        assert_eq!(
            load_state(&mut conn, order, false).await.unwrap(),
            Some(state)
        );
        assert_eq!(
            kinds(timeline(&mut conn, order).await.unwrap()),
            [
                "placed",
                "cancellation_requested",
                "stock_reserved",
                "stock_released"
            ]
        );
    }
}
