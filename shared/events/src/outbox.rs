//! Publishing: the one way a module announces a state change.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use diesel::ExpressionMethods as _;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use kernel::{CallContext, Envelope, IntegrationEvent};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::tables::outbox;

/// Writes `event` into the outbox of the connection's module schema. Call it
/// inside the transaction that makes the change, so both commit or neither.
/// Call [`wake`] once the transaction has committed. A change that announces
/// several events writes them with one [`Batch`] instead. A shared
/// reference: the INSERT can be pipelined with the change's other
/// statements (ADR 0015).
///
/// # Errors
/// Database errors (the caller's transaction then rolls back).
pub async fn publish<E: IntegrationEvent>(
    conn: &AsyncPgConnection,
    source: &str,
    cx: &CallContext,
    event: &E,
) -> diesel::QueryResult<Uuid> {
    let mut batch = Batch::new(source, cx);
    let id = batch.push(event)?;
    batch.write(conn).await?;
    Ok(id)
}

/// Events a change announces, written to the outbox by one statement
/// ([`Batch::write`]) in the order they were pushed: the relay delivers them
/// in that order, as if each had been [`publish`]ed in turn.
pub struct Batch<'a> {
    source: &'a str,
    cx: &'a CallContext,
    envelopes: Vec<Envelope>,
}

impl<'a> Batch<'a> {
    /// An empty batch of events published by `source` in the context `cx`.
    pub fn new(source: &'a str, cx: &'a CallContext) -> Batch<'a> {
        Batch {
            source,
            cx,
            envelopes: Vec::new(),
        }
    }

    /// Adds `event` (in the current trace, if any); its event id.
    ///
    /// # Errors
    /// When the payload does not serialise.
    pub fn push<E: IntegrationEvent>(&mut self, event: &E) -> diesel::QueryResult<Uuid> {
        let envelope = Envelope::new(self.source, self.cx, event)
            .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
        let envelope = traced(envelope);
        let id = envelope.id;
        self.envelopes.push(envelope);
        Ok(id)
    }

    /// Writes the events into the outbox of the connection's module schema,
    /// in one statement (none for an empty batch). Call it inside the
    /// transaction that makes the change, and [`wake`] once it committed.
    ///
    /// # Errors
    /// Database errors (the caller's transaction then rolls back).
    pub async fn write(self, mut conn: &AsyncPgConnection) -> diesel::QueryResult<()> {
        if self.envelopes.is_empty() {
            return Ok(());
        }
        let rows = self
            .envelopes
            .iter()
            .map(|envelope| {
                let json = serde_json::to_value(envelope)
                    .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
                Ok((
                    outbox::id.eq(envelope.id),
                    outbox::event_type.eq(&envelope.event_type),
                    outbox::aggregate_id.eq(&envelope.aggregate_id),
                    outbox::envelope.eq(json),
                ))
            })
            .collect::<diesel::QueryResult<Vec<_>>>()?;
        // One row per event, numbered (`seq`) in the order of the VALUES list.
        db::cached(diesel::insert_into(outbox::table).values(rows))
            .execute(&mut conn)
            .await?;
        for envelope in &self.envelopes {
            tracing::debug!(event.id = %envelope.id, event.type = %envelope.event_type, "event written to the outbox");
        }
        Ok(())
    }
}

/// `envelope` in the current trace, if any: its handlers continue it.
fn traced(mut envelope: Envelope) -> Envelope {
    if let Some(trace) = telemetry::trace::current() {
        envelope.traceparent = Some(trace.traceparent);
        envelope.tracestate = trace.tracestate;
    }
    envelope
}

/// An event that the statement making its change writes into the outbox
/// itself, its payload made by that statement from the row it changed and
/// returns (so a row every writer wants, a best-selling SKU's stock, is not
/// held for one more round trip while the event is written after it). The
/// envelope is made here, before the statement, as [`Batch::push`] makes
/// it, with a `null` payload; the statement binds [`Prepared::id`],
/// [`Prepared::event_type`], the aggregate and [`Prepared::envelope`], and
/// inserts `jsonb_set(envelope, '{payload}', <the payload>)`. That payload
/// must be what serde makes of the event (a test of the writer compares
/// them); the relay delivers the row like any other.
#[derive(Debug, Clone)]
pub struct Prepared {
    envelope: Envelope,
}

impl Prepared {
    /// Prepares an `E` about `aggregate_id`, published by `source` in the
    /// context `cx` (and the current trace, if any).
    pub fn new<E: IntegrationEvent>(
        source: &str,
        cx: &CallContext,
        aggregate_id: String,
    ) -> Prepared {
        let envelope =
            Envelope::with_payload::<E>(source, cx, aggregate_id, serde_json::Value::Null);
        Prepared {
            envelope: traced(envelope),
        }
    }

    /// The event's id (the outbox row's).
    pub fn id(&self) -> Uuid {
        self.envelope.id
    }

    /// The event's type (the outbox row's `event_type`).
    pub fn event_type(&self) -> &str {
        &self.envelope.event_type
    }

    /// The aggregate it is about (the outbox row's `aggregate_id`).
    pub fn aggregate_id(&self) -> &str {
        &self.envelope.aggregate_id
    }

    /// The envelope as JSON, its payload `null`.
    ///
    /// # Errors
    /// When it does not serialise (not expected for plain data).
    pub fn envelope(&self) -> diesel::QueryResult<serde_json::Value> {
        serde_json::to_value(&self.envelope)
            .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))
    }
}

/// The relays of this process, by module, that [`wake`] reaches.
static RELAYS: LazyLock<Mutex<HashMap<String, Vec<Weak<Notify>>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Registers a relay of `module`: the returned handle is notified by
/// [`wake`] for as long as it lives.
pub(crate) fn subscribe(module: &str) -> Arc<Notify> {
    let notify = Arc::new(Notify::new());
    if let Ok(mut relays) = RELAYS.lock() {
        let list = relays.entry(module.to_owned()).or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&notify));
    }
    notify
}

/// Wakes this process's relays of `module`: call it after a transaction
/// that [`publish`]ed has committed. The relay's own instance always runs
/// the relay of the modules it serves, so the writer's wake is enough;
/// polling (`events.poll_interval_ms`) covers a forgotten wake, and the
/// relays of other instances. Costs no database work, unlike the `NOTIFY`
/// in the writer's transaction it replaces, which serialized every
/// publishing commit in the database (ADR 0015).
pub fn wake(module: &str) {
    if let Ok(relays) = RELAYS.lock()
        && let Some(list) = relays.get(module)
    {
        for notify in list.iter().filter_map(Weak::upgrade) {
            notify.notify_one();
        }
    }
}
